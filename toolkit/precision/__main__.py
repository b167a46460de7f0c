"""``python -m toolkit.precision``: a missing package is reported in one line (``toolkit.cli.run_main``)."""

from toolkit.cli import run_main

run_main("toolkit.precision.cli", "main", "-m toolkit.precision")
