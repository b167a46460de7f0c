"""``python -m toolkit.serving start|stop|status``: a thin CLI over toolkit.serving.server.

``SERVER=docker`` makes ``start`` run NVIDIA's tritonserver container instead of the pip binary.
The admin key of an exposed server comes from ``$TRITON_ADMIN_KEY`` only: no option takes it, so it stays out
of shell history, and nothing here prints it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from toolkit.cli import CONTEXT_SETTINGS
from toolkit.errors import BadInputError, ToolkitError
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


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """Run a Triton Inference Server on a model repository."""


def _server_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """What the server is started on and how: shared by ``start`` and ``run``."""
    for option in reversed(
        [
            click.option(
                "--repository",
                default="model_repository",
                show_default=True,
                help="Local folder, or a URL tritonserver reads itself: s3://bucket/path, s3://host:port/bucket/path (credentials from "
                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION); gs:// and as:// are passed through untouched.",
            ),
            click.option(
                "--listen",
                default=server.LOOPBACK,
                show_default=True,
                help=f"IPv4 address of the HTTP, gRPC and metrics endpoints. {server.EVERY_INTERFACE} exposes the server to other hosts; "
                f"its {', '.join(server.RESTRICTED_APIS)} APIs then need the key in ${server.ADMIN_KEY_VARIABLE}, sent as HTTP header "
                f"{server.ADMIN_KEY_HEADER} or gRPC metadata {server.GRPC_ADMIN_KEY_HEADER}.",
            ),
            click.option(
                "--restrict/--no-restrict",
                default=None,
                help=f"Require the admin key for the {', '.join(server.RESTRICTED_APIS)} APIs (default: when --listen is not loopback).",
            ),
            click.option(
                "--model-control-mode",
                type=click.Choice(["none", "poll", "explicit"]),
                default="none",
                show_default=True,
                help="none: load every model at start; poll: follow repository changes every --poll-secs; explicit: load --load-model "
                "at start and others on request (Triton Model Analyzer's remote mode needs this).",
            ),
            click.option("--load-model", "load_models", multiple=True, help="Explicit mode: model to load at start (repeat; '*' loads all)."),
            click.option("--poll-secs", default=15, show_default=True, type=int, help="Poll mode: seconds between repository polls."),
            click.option("--log-verbose", default=0, show_default=True, type=int, help="tritonserver --log-verbose level."),
            click.option("--timeout", default=180.0, show_default=True, type=float, help="Seconds to wait for readiness."),
        ]
    ):
        command = option(command)
    return _port_options(command)


def _server_choice(
    repository: str, listen: str, restrict: bool | None, model_control_mode: str, load_models: tuple[str, ...], poll_secs: int
) -> tuple[Any, server.ServerOptions]:
    """The repository's location and the server's options, from the shared flags (the admin key from the environment)."""
    from toolkit.repository.object_store import repository_location

    options = server.ServerOptions(
        listen=listen,
        restrict=restrict,
        admin_key=server.admin_key_from_environment(),
        model_control=cast(server.ModelControl, model_control_mode),
        load_models=load_models,
        poll_secs=poll_secs,
    )
    return repository_location(repository), options


@main.command()
@_server_options
@click.option("--gpus", default="all", show_default=True, help="docker --gpus value (SERVER=docker only).")
@click.option("--dry-run", is_flag=True, help="SERVER=docker: print the docker command without running it.")
def start(log_verbose: int, timeout: float, gpus: str, dry_run: bool, http_port: int, grpc_port: int, metrics_port: int,
          state_dir: Path, **choice: Any) -> None:  # fmt: skip
    """Start the server in the background and wait until every model it loads is ready."""
    ports = server.Ports(http=http_port, grpc=grpc_port, metrics=metrics_port)
    try:
        location, options = _server_choice(**choice)
        if os.environ.get("SERVER", "local") == "docker":
            command = server.docker_command(location, ports, gpus=gpus, log_verbose=log_verbose, options=options)
            click.echo(shlex.join(command))
            if not dry_run:
                sys.exit(subprocess.call(command))
            return
        handle = server.start_server(location, ports, state_dir=state_dir, log_verbose=log_verbose, timeout=timeout, options=options)
    except ToolkitError as error:
        raise click.ClickException(str(error)) from error
    where = f"{options.listen}: http :{ports.http}, grpc :{ports.grpc}, metrics :{ports.metrics}"
    restricted = f"; {', '.join(server.RESTRICTED_APIS)} APIs need ${server.ADMIN_KEY_VARIABLE}" if options.restricted else ""
    click.echo(f"tritonserver ready: pid {handle.pid}, on {where}{restricted}; log {handle.log_path}")


@main.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@_server_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(command: tuple[str, ...], log_verbose: int, timeout: float, http_port: int, grpc_port: int, metrics_port: int,
        state_dir: Path, **choice: Any) -> None:  # fmt: skip
    """Run COMMAND against a server on the ports: the one already ready there, else one started on --repository
    for COMMAND and stopped after it (stdout says which). Exits with COMMAND's status. `make perf`, `make fidelity`
    and `make infer` run through this."""
    ports = server.Ports(http=http_port, grpc=grpc_port, metrics=metrics_port)
    try:
        if os.environ.get("SERVER", "local") == "docker":
            raise BadInputError("run starts the pip tritonserver; with SERVER=docker start the container first (make serve), then run the command")
        location, options = _server_choice(**choice)
        with server.server_for(location, ports, state_dir=state_dir, log_verbose=log_verbose, timeout=timeout, options=options, log=click.echo):
            status = subprocess.call(list(command))
    except ToolkitError as error:
        raise click.ClickException(str(error)) from error
    sys.exit(status)


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
    ready = server.is_ready(ports, handle.host if handle else server.LOOPBACK)
    pid = f"pid {handle.pid}" if handle else "no pid file"
    click.echo(f"tritonserver {'ready' if ready else 'not ready'} on http :{ports.http}, grpc :{ports.grpc} ({pid})")
    sys.exit(0 if ready else 1)

