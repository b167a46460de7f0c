"""``python -m toolkit.deploy``: the click commands of ``toolkit.deploy.cli``, a missing package reported in one line."""

from toolkit.cli import run_main

run_main("toolkit.deploy.cli", "main", "-m toolkit.deploy")
