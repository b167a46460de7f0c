"""``python -m toolkit.serving start|stop|status``: a thin CLI over toolkit.serving.server.

``SERVER=docker`` makes ``start`` run NVIDIA's tritonserver container instead of the pip binary.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from toolkit.errors import ToolkitError
from toolkit.serving import server


def _port_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in (
        click.option("--http-port", default=8000, show_default=True, type=int),
        click.option("--grpc-port", default=8001, show_default=True, type=int),
        click.option("--metrics-port", default=8002, show_default=True, type=int),
        click.option(
            "--state-dir",
            default=server.DEFAULT_STATE_DIR,
            show_default=True,
            type=click.Path(path_type=Path),
            help="Where the pid and log files live.",
        ),
    ):
        command = option(command)
    return command


@click.group()
def main() -> None:
    """Run a Triton Inference Server on a model repository."""


@main.command()
@click.option("--repository", default=Path("model_repository"), show_default=True, type=click.Path(path_type=Path))
@click.option("--log-verbose", default=0, show_default=True, type=int, help="tritonserver --log-verbose level.")
@click.option("--timeout", default=180.0, show_default=True, type=float, help="Seconds to wait for readiness.")
@click.option("--gpus", default="all", show_default=True, help="docker --gpus value (SERVER=docker only).")
@click.option("--dry-run", is_flag=True, help="SERVER=docker: print the docker command without running it.")
@_port_options
def start(
    repository: Path,
    log_verbose: int,
    timeout: float,
    gpus: str,
    dry_run: bool,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    state_dir: Path,
) -> None:
    """Start the server in the background and wait until every model is ready."""
    ports = server.Ports(http=http_port, grpc=grpc_port, metrics=metrics_port)
    if os.environ.get("SERVER", "local") == "docker":
        command = server.docker_command(repository, ports, gpus=gpus, log_verbose=log_verbose)
        click.echo(shlex.join(command))
        if not dry_run:
            sys.exit(subprocess.call(command))
        return
    try:
        handle = server.start_server(repository, ports, state_dir=state_dir, log_verbose=log_verbose, timeout=timeout)
    except ToolkitError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"tritonserver ready: pid {handle.pid}, http :{ports.http}, grpc :{ports.grpc}, log {handle.log_path}")


@main.command()
@click.option("--timeout", default=30.0, show_default=True, type=float, help="Seconds to wait for exit and free ports.")
@_port_options
def stop(timeout: float, http_port: int, grpc_port: int, metrics_port: int, state_dir: Path) -> None:
    """Stop the server started by ``start`` and wait until its ports are free."""
    handle = server.read_handle(state_dir)
    if handle is None:
        click.echo(f"no server recorded in {state_dir}")
        return
    try:
        server.stop_server(handle, timeout=timeout, state_dir=state_dir)
    except ToolkitError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"tritonserver pid {handle.pid} stopped; ports {handle.ports.as_list()} free")


@main.command()
@_port_options
def status(http_port: int, grpc_port: int, metrics_port: int, state_dir: Path) -> None:
    """Say whether a server answers on the ports (exit 1 when not ready)."""
    handle = server.read_handle(state_dir)
    ports = handle.ports if handle else server.Ports(http=http_port, grpc=grpc_port, metrics=metrics_port)
    ready = server.is_ready(ports)
    pid = f"pid {handle.pid}" if handle else "no pid file"
    click.echo(f"tritonserver {'ready' if ready else 'not ready'} on http :{ports.http}, grpc :{ports.grpc} ({pid})")
    sys.exit(0 if ready else 1)


if __name__ == "__main__":
    main()
