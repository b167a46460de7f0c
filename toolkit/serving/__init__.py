"""Start, check and stop a Triton server on a generated model repository."""

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
