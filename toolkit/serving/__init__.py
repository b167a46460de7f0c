"""Start, check and stop a Triton server on a generated model repository.

The names below load ``toolkit.serving.server`` on first use, so ``python -m toolkit.serving`` starts without
numpy and can report a missing package in one line (``toolkit.cli.run_main``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.cli import lazy_exports

if TYPE_CHECKING:
    from toolkit.serving.server import (
        Ports,
        ServerHandle,
        ServerOptions,
        admin_key_from_environment,
        docker_command,
        free_ports,
        prepare_backend_dir,
        read_handle,
        running_server,
        server_command,
        start_server,
        stop_server,
    )

__all__ = [
    "Ports",
    "ServerHandle",
    "ServerOptions",
    "admin_key_from_environment",
    "docker_command",
    "free_ports",
    "prepare_backend_dir",
    "read_handle",
    "running_server",
    "server_command",
    "start_server",
    "stop_server",
]


__getattr__ = lazy_exports(__name__, "toolkit.serving.server", __all__)
