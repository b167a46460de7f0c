"""``python -m toolkit.repository``: the click commands of ``toolkit.repository.cli``, a missing package reported in one line."""

from toolkit.cli import run_main

run_main("toolkit.repository.cli", "main", "-m toolkit.repository")
