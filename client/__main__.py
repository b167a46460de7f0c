"""Entry point of ``python -m client``: a missing package is reported in one line (``toolkit.cli.run_main``)."""

from toolkit.cli import run_main

run_main("client.cli", "main", "-m client")
