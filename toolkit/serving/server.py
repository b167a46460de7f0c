"""Run the pip-installed Triton server (nvidia-pytriton's binary) or render its docker command.

The wheel's server has only the Python backend. We assemble a backend folder where each runtime plug-in's
folder (``onnxruntime/``, ``tensorrt/``) holds its Python-based backend, so configs that say
``platform: "onnxruntime_onnx"`` / ``"tensorrt_plan"`` load through them: Triton resolves a platform to
``<backend-dir>/<backend>/model.py`` when the native backend is absent.

The repository is a local folder or a URL tritonserver reads itself (``s3://``, ``gs://``, ``as://``: see
``toolkit.repository.object_store``). ``ServerOptions`` says who can reach the server (loopback unless told
otherwise; exposed, the APIs that change the server need a key) and how it manages models.
"""

from __future__ import annotations

import contextlib
import filecmp
import importlib.util
import ipaddress
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from toolkit.errors import BadInputError, DependencyMissingError, ServerError
from toolkit.runtimes import RUNTIMES

if TYPE_CHECKING:
    from toolkit.repository.object_store import RepositoryLocation

DEFAULT_STATE_DIR = Path("build/server")
DEFAULT_BACKEND_DIR = Path("build/backends")
DOCKER_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# Packages our Python models import that NVIDIA's container lacks.
DOCKER_PIP_PACKAGES = ("tokenizers==0.23.3",)
LOG_TAIL_LINES = 40
LOOPBACK = "127.0.0.1"
EVERY_INTERFACE = "0.0.0.0"
ADMIN_KEY_VARIABLE = "TRITON_ADMIN_KEY"  # read from the environment only, never from a command line
ADMIN_KEY_HEADER = "admin-key"  # the HTTP header a client sends the key in
GRPC_ADMIN_KEY_HEADER = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}"  # gRPC metadata: tritonserver prefixes the key
# APIs that change the server or reach into its memory; health, metadata, inference, model-config and
# statistics stay open to whoever can reach an exposed server.
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_KEY_PATTERN = re.compile(r"[A-Za-z0-9._~-]{16,}")
ModelControl = Literal["none", "poll", "explicit"]


@dataclass(frozen=True)
class Ports:
    """The server's three listening ports."""

    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def as_list(self) -> list[int]:
        """The ports in (http, grpc, metrics) order."""
        return [self.http, self.grpc, self.metrics]


@dataclass(frozen=True)
class ServerOptions:
    """Who can reach the server, and how it manages models.

    ``listen`` is the IPv4 address of the HTTP, gRPC and metrics endpoints: loopback by default, so only this
    host reaches them. Any other address exposes the server; the ``RESTRICTED_APIS`` then answer only requests
    that carry the key: HTTP header ``admin-key``, gRPC metadata ``triton-grpc-protocol-admin-key`` (``restrict=False`` leaves them open;
    ``restrict=True`` restricts a loopback server too). ``admin_key`` comes from ``$TRITON_ADMIN_KEY``
    (``admin_key_from_environment``), and tritonserver receives it in its arguments.
    ``model_control`` is tritonserver's ``--model-control-mode``: ``poll`` re-reads the repository every
    ``poll_secs``; ``explicit`` loads ``load_models`` at start (``*``: all) and the rest on request.
    """

    listen: str = LOOPBACK
    restrict: bool | None = None  # None: restrict exactly when exposed
    admin_key: str | None = field(default=None, repr=False)
    model_control: ModelControl = "none"
    load_models: tuple[str, ...] = ()
    poll_secs: int = 15

    def __post_init__(self) -> None:
        try:
            address = ipaddress.ip_address(self.listen)
        except ValueError:
            address = None
        if address is None or address.version != 4:
            raise BadInputError(f"--listen {self.listen!r}: give an IPv4 address: {LOOPBACK} (this host only) or {EVERY_INTERFACE} (every interface)")
        if self.model_control not in get_args(ModelControl):
            raise BadInputError(f"--model-control-mode {self.model_control!r}: use one of {', '.join(get_args(ModelControl))}")
        if self.load_models and self.model_control != "explicit":
            raise BadInputError(f"--load-model {' '.join(self.load_models)} needs --model-control-mode explicit")
        if "*" in self.load_models and len(self.load_models) > 1:
            raise BadInputError("--load-model '*' loads every model and must be the only --load-model")
        if self.poll_secs < 1:
            raise BadInputError(f"--poll-secs {self.poll_secs}: poll at most once a second (1 or more)")
        if self.restricted and not self.admin_key:
            apis = ", ".join(RESTRICTED_APIS)
            why = f"--listen {self.listen} lets other hosts reach the server" if self.exposed else "--restrict was asked for"
            raise BadInputError(
                f"{why}, and its {apis} APIs then need a key, read from ${ADMIN_KEY_VARIABLE}, which is not set: "
                f"export {ADMIN_KEY_VARIABLE}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                + (", or pass --no-restrict to leave these APIs open to every host that reaches the server" if self.exposed else "")
            )
        if self.restricted and not ADMIN_KEY_PATTERN.fullmatch(self.admin_key or ""):
            raise BadInputError(  # says the key's length, never the key
                f"${ADMIN_KEY_VARIABLE} has {len(self.admin_key or '')} characters: use 16 or more of A-Z a-z 0-9 . _ ~ - "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))' gives one)"
            )

    @property
    def exposed(self) -> bool:
        """True when hosts other than this one can reach the endpoints."""
        return not ipaddress.ip_address(self.listen).is_loopback

    @property
    def restricted(self) -> bool:
        """True when the ``RESTRICTED_APIS`` need the admin key."""
        return self.exposed if self.restrict is None else self.restrict

    @property
    def probe_host(self) -> str:
        """Where this host reaches the server (readiness, port checks)."""
        return LOOPBACK if self.listen == EVERY_INTERFACE else self.listen

    def control_arguments(self, key: str | None = None) -> list[str]:
        """tritonserver's model-control and API-restriction flags; ``key`` stands in for the admin key (docker
        passes a shell variable the container expands, so the key never appears in the rendered command)."""
        arguments = []
        if self.model_control != "none":
            arguments.append(f"--model-control-mode={self.model_control}")
        if self.model_control == "poll":
            arguments.append(f"--repository-poll-secs={self.poll_secs}")
        arguments += [f"--load-model={name}" for name in self.load_models]
        if self.restricted:
            restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={key or self.admin_key}"
            arguments += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
        return arguments


def admin_key_from_environment() -> str | None:
    """The admin key from ``$TRITON_ADMIN_KEY`` (empty counts as unset)."""
    return os.environ.get(ADMIN_KEY_VARIABLE) or None


@dataclass(frozen=True)
class ServerHandle:
    """A started server: its process id, log file, ports and the address this host reaches it on."""

    pid: int
    log_path: Path
    ports: Ports
    process: subprocess.Popen[bytes] | None = None  # set when this Python started it
    host: str = LOOPBACK


def pytriton_root() -> Path:
    """The installed ``pytriton`` package folder, or DependencyMissingError naming the wheel."""
    # Located, not imported: importing pytriton pulls in dependencies the server binary does not need.
    spec = importlib.util.find_spec("pytriton")
    if spec is None or spec.origin is None:
        raise DependencyMissingError("tritonserver comes from nvidia-pytriton: pip install nvidia-pytriton==0.7.0")
    return Path(spec.origin).resolve().parent


def tritonserver_binary() -> Path:
    """Path of the ``tritonserver`` executable inside the nvidia-pytriton wheel."""
    binary = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise DependencyMissingError(f"{binary} is missing: reinstall nvidia-pytriton==0.7.0")
    return binary


def prepare_backend_dir(target: Path = DEFAULT_BACKEND_DIR) -> Path:
    """Assemble ``target`` with python/ (wheel's backend + stub of this Python) and our Python-based backends."""
    server = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise DependencyMissingError(f"nvidia-pytriton has no Python backend stub for Python {version} ({stub})")
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for source in [*(server / "backends" / "python").glob("*.*"), stub]:
        copy = python_dir / source.name
        # A server already running from this folder executes the stub: overwriting it fails (ETXTBSY), and
        # a second server (make analyze beside make serve) needs the same files anyway.
        if source.is_file() and not (copy.is_file() and filecmp.cmp(source, copy, shallow=False)):
            shutil.copy2(source, copy)
    for runtime in RUNTIMES.values():  # each runtime's Python-based backend, with the modules it imports by name
        folder = target / runtime.name
        folder.mkdir(parents=True, exist_ok=True)
        for name, source in runtime.backend_files().items():
            shutil.copy2(source, folder / name)
    return target


def server_environment() -> dict[str, str]:
    """Environment for tritonserver: the wheel's libraries (+ CUDA runtime), this venv's Python first on PATH,
    and tokenizers' parallelism on."""
    environment = dict(os.environ)
    site = pytriton_root().parent
    libraries = [site / "nvidia_pytriton.libs", site / "nvidia" / "cuda_runtime" / "lib"]
    existing = [str(path) for path in libraries if path.is_dir()]
    if environment.get("LD_LIBRARY_PATH"):
        existing.append(environment["LD_LIBRARY_PATH"])
    environment["LD_LIBRARY_PATH"] = os.pathsep.join(existing)
    # The Python stub imports model dependencies from the first python on PATH (it ignores PYTHONPATH);
    # BACKEND_PYTHON names another environment for the backends (e.g. one with onnxruntime-gpu).
    backend_python = Path(environment.get(BACKEND_PYTHON_VARIABLE) or sys.executable)
    environment["PATH"] = os.pathsep.join([str(backend_python.parent), environment.get("PATH", "")])
    # The tokenizer model encodes a batch's rows on every core; a client's TOKENIZERS_PARALLELISM=false (set to
    # quiet fork warnings in its own tools) must not serialize the server's (8x slower at batch 32 on 16 cores).
    environment["TOKENIZERS_PARALLELISM"] = "true"
    return environment


BACKEND_PYTHON_VARIABLE = "BACKEND_PYTHON"


def _repository_argument(repository: RepositoryLocation) -> str:
    """A local folder as an absolute path; a URL as given (tritonserver reads s3://, gs://, as:// itself)."""
    from toolkit.repository.object_store import remote_scheme

    return str(repository) if remote_scheme(repository) else str(Path(repository).resolve())


def server_command(
    repository: RepositoryLocation, backend_dir: Path, ports: Ports, log_verbose: int = 0, options: ServerOptions | None = None
) -> list[str]:
    """The tritonserver argument list for a local run."""
    options = options or ServerOptions()
    return [
        str(tritonserver_binary()),
        f"--model-repository={_repository_argument(repository)}",
        f"--backend-directory={backend_dir.resolve()}",
        *(f"--{endpoint}-address={options.listen}" for endpoint in ("http", "grpc", "metrics")),
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--log-verbose={log_verbose}",
        "--exit-on-error=true",
        "--strict-readiness=true",
        # Python models pass tensors through shared memory that grows on demand: grow it in 16 MiB steps,
        # not 1 MiB, for GPT-2's logits (hundreds of MiB at batch 8). Growth is lazy: nothing is reserved.
        f"--backend-config=python,shm-growth-byte-size={16 << 20}",
        *options.control_arguments(),
    ]


def docker_command(
    repository: RepositoryLocation,
    ports: Ports = Ports(),
    *,
    gpus: str = "all",
    image: str = DOCKER_IMAGE,
    log_verbose: int = 0,
    pip_packages: tuple[str, ...] = DOCKER_PIP_PACKAGES,
    options: ServerOptions | None = None,
) -> list[str]:
    """``docker run`` of NVIDIA's tritonserver container on ``repository`` (native ORT/TensorRT backends there).

    A local folder is mounted at /models; a URL goes to tritonserver as is, with the names of its credential
    variables passed through (``-e NAME``: docker copies the values, so none is printed). Ports are published on
    ``options.listen`` only; the admin key reaches the container the same way and is expanded inside it.
    """
    from toolkit.repository.object_store import CREDENTIAL_VARIABLES, remote_scheme

    options = options or ServerOptions()
    scheme = remote_scheme(repository)
    inside = [
        "tritonserver",
        f"--model-repository={repository if scheme else '/models'}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--log-verbose={log_verbose}",
        *options.control_arguments(key=f'"${{{ADMIN_KEY_VARIABLE}}}"'),
    ]
    script = " ".join(inside)  # not shlex.join: the key's variable must expand inside the container
    if pip_packages:
        script = f"pip install --quiet {shlex.join(pip_packages)} && exec {script}"
    passed = [*(CREDENTIAL_VARIABLES[scheme] if scheme else ()), *((ADMIN_KEY_VARIABLE,) if options.restricted else ())]
    mount = [] if scheme else ["-v", f"{Path(repository).resolve()}:/models:ro"]
    return [
        "docker", "run", "--rm", f"--gpus={gpus}", "--shm-size=1g",
        *(f"-p{options.listen}:{port}:{port}" for port in ports.as_list()),
        *(f"-e{name}" for name in passed),
        *mount,
        image, "bash", "-c", script,
    ]  # fmt: skip


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def free_ports() -> Ports:
    """Three distinct TCP ports nothing listens on now (for tests); sockets stay bound until all are picked."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(3)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        http, grpc, metrics = (int(probe.getsockname()[1]) for probe in probes)
    return Ports(http=http, grpc=grpc, metrics=metrics)


def is_ready(ports: Ports, host: str = "127.0.0.1") -> bool:
    """True when both HTTP and gRPC health endpoints report the server ready."""
    try:
        with urllib.request.urlopen(f"http://{host}:{ports.http}/v2/health/ready", timeout=1) as reply:
            if reply.status != 200:
                return False
    except (urllib.error.URLError, OSError):
        return False
    import tritonclient.grpc as grpcclient  # gRPC stack is slow to import; only needed here

    try:
        with grpcclient.InferenceServerClient(f"{host}:{ports.grpc}") as client:
            return bool(client.is_server_ready(client_timeout=1))
    except Exception:  # any gRPC failure means "not ready yet"
        return False


def log_tail(log_path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the server log."""
    if not log_path.is_file():
        return f"(no log at {log_path})"
    return "\n".join(log_path.read_text(errors="replace").splitlines()[-lines:])


# CPU machines always log the missing CUDA driver; it is not why a start failed.
CPU_MACHINE_NOISE = ("CudaDriverHelper", "CUDA driver version is insufficient")


def log_errors(log_path: Path, limit: int = 10) -> list[str]:
    """The server log's error messages, deduplicated; the big status tables bury them.

    glog ``E`` lines, and the ``error: creating server: ...`` line tritonserver prints when it cannot start at
    all (a repository it cannot read, such as a missing bucket or refused credentials).
    """
    if not log_path.is_file():
        return []
    messages: dict[str, None] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        match = re.match(r'E\d{4} [\d:.]+ +\d+ [^\]]+\] "?(.*)', line) or re.match(r"error: (creating server: .*)", line)
        if match and not any(noise in match.group(1) for noise in CPU_MACHINE_NOISE):
            messages.setdefault(match.group(1).split("\\n")[0].rstrip('"\\ ')[:300])  # the log escapes newlines
    return list(messages)[:limit]


def _startup_failure(what: str, log_path: Path) -> ServerError:
    """The first error tritonserver logged on the first line, the others below it, then the log's tail."""
    errors = log_errors(log_path)
    first = f": {errors[0]}" if errors else ""
    others = "".join(f"\n  {message}" for message in errors[1:])
    return ServerError(f"tritonserver {what}{first}{others}\nlast {LOG_TAIL_LINES} log lines of {log_path}:\n{log_tail(log_path)}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):  # a zombie is dead for our purposes
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    return True


def wait_until_ready(handle: ServerHandle, timeout: float) -> None:
    """Block until the server is ready; ServerError with the log tail if it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = handle.process.poll() is not None if handle.process else not _pid_alive(handle.pid)
        if exited:
            raise _startup_failure("exited during startup", handle.log_path)
        if is_ready(handle.ports, handle.host):
            return
        time.sleep(0.5)
    raise _startup_failure(f"not ready after {timeout:.0f} s (raise --timeout)", handle.log_path)


def start_server(
    repository: RepositoryLocation,
    ports: Ports = Ports(),
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    log_verbose: int = 0,
    timeout: float = 120.0,
    options: ServerOptions | None = None,
) -> ServerHandle:
    """Start tritonserver in the background (pid and log under ``state_dir``) and wait until ready.

    ``repository`` is a local folder or an ``s3://``/``gs://``/``as://`` URL (credentials from the standard
    variables, e.g. ``AWS_ACCESS_KEY_ID``). Ready means every model it loads at start is ready (in explicit
    model control, only ``options.load_models``). On failure the server is stopped and ServerError carries
    tritonserver's first error and the last log lines.
    """
    from toolkit.repository.object_store import remote_scheme

    options = options or ServerOptions()
    if not remote_scheme(repository) and not Path(repository).is_dir():
        raise ServerError(f"model repository {repository} does not exist: write it first (--repository)")
    busy = [port for port in ports.as_list() if port_in_use(port, options.probe_host)]
    if busy:
        raise ServerError(f"ports {busy} are already in use: stop that server or pick other ports (--http-port ...)")
    state_dir.mkdir(parents=True, exist_ok=True)
    backend_dir = prepare_backend_dir(state_dir.parent / "backends")  # build/server -> build/backends
    log_path = state_dir / "tritonserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(repository, backend_dir, ports, log_verbose, options),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(),
            start_new_session=True,  # own process group: stop_server signals the stubs too
        )
    (state_dir / "tritonserver.pid").write_text(f"{process.pid} {ports.http} {ports.grpc} {ports.metrics} {options.probe_host}\n")
    handle = ServerHandle(process.pid, log_path, ports, process, options.probe_host)
    try:
        wait_until_ready(handle, timeout)
    except ServerError:
        _terminate(handle.pid, handle.process, 10.0)
        raise
    return handle


def read_handle(state_dir: Path = DEFAULT_STATE_DIR) -> ServerHandle | None:
    """The running server recorded in ``state_dir``'s pid file, or None (a stale pid file is removed)."""
    pid_file = state_dir / "tritonserver.pid"
    if not pid_file.is_file():
        return None
    fields = pid_file.read_text().split()
    pid, http, grpc, metrics = (int(value) for value in fields[:4])
    host = fields[4] if len(fields) > 4 else LOOPBACK  # pid files written before the server chose its address
    try:  # a stale pid file may name a pid the system has since given to another program
        is_server = b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        is_server = False
    if not is_server:
        pid_file.unlink()
        return None
    return ServerHandle(pid, state_dir / "tritonserver.log", Ports(http, grpc, metrics), host=host)


def _terminate(pid: int, process: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM the server's process group (server and Python stubs), SIGKILL it after ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if (process.poll() is not None) if process else not _pid_alive(pid):
                return
            time.sleep(0.2)


def stop_server(handle: ServerHandle, *, timeout: float = 30.0, state_dir: Path | None = None) -> None:
    """Stop the server, wait until its ports are free, and remove ``state_dir``'s pid file."""
    _terminate(handle.pid, handle.process, timeout)
    deadline = time.monotonic() + timeout
    while any(port_in_use(port, handle.host) for port in handle.ports.as_list()):
        if time.monotonic() > deadline:
            raise ServerError(f"ports {handle.ports.as_list()} still in use {timeout:.0f} s after stopping pid {handle.pid}")
        time.sleep(0.2)
    if state_dir is not None:
        (state_dir / "tritonserver.pid").unlink(missing_ok=True)


@contextlib.contextmanager
def server_for(
    repository: RepositoryLocation,
    ports: Ports = Ports(),
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    log_verbose: int = 0,
    timeout: float = 180.0,
    options: ServerOptions | None = None,
    log: Callable[[str], object] = print,
) -> Iterator[ServerHandle | None]:
    """The server already ready on ``ports`` (None: it is not this block's to stop), else one started on
    ``repository`` for the block and stopped after it; ``log`` says which, before the block runs."""
    host = (options or ServerOptions()).probe_host
    if is_ready(ports, host):
        log(f"using the Triton server already ready on {host} (http :{ports.http}, grpc :{ports.grpc})")
        yield None
        return
    log(f"no Triton server is ready on {host} (http :{ports.http}, grpc :{ports.grpc}): starting one on {repository} for this command; it stops when the command ends")
    with running_server(repository, ports, state_dir=state_dir, log_verbose=log_verbose, timeout=timeout, options=options) as handle:
        log(f"tritonserver ready: pid {handle.pid}, log {handle.log_path}")
        yield handle


@contextlib.contextmanager
def running_server(
    repository: RepositoryLocation,
    ports: Ports | None = None,
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    log_verbose: int = 0,
    timeout: float = 120.0,
    options: ServerOptions | None = None,
) -> Iterator[ServerHandle]:
    """A ready server for the ``with`` block, always stopped afterwards; free ports when ``ports`` is None."""
    ports = ports or free_ports()
    handle = start_server(repository, ports, state_dir=state_dir, log_verbose=log_verbose, timeout=timeout, options=options)
    try:
        yield handle
    finally:
        stop_server(handle, state_dir=state_dir)
