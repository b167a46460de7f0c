"""``python -m toolkit.serving``: the click commands of ``toolkit.serving.cli``, a missing package reported in one line."""

from toolkit.cli import run_main

run_main("toolkit.serving.cli", "main", "-m toolkit.serving")
