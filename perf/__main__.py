"""``python -m perf``: a missing package is reported in one line (``toolkit.cli.run_main``)."""

from toolkit.cli import run_main

run_main("perf.cli", "main", "-m perf")
