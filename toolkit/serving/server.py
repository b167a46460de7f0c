"""Run the pip-installed Triton server (nvidia-pytriton's binary) or render its docker command.

The wheel's server has only the Python backend. We assemble a backend folder where each runtime plug-in's
folder (``onnxruntime/``, ``tensorrt/``) holds its Python-based backend, so configs that say
``platform: "onnxruntime_onnx"`` / ``"tensorrt_plan"`` load through them: Triton resolves a platform to
``<backend-dir>/<backend>/model.py`` when the native backend is absent.
"""

from __future__ import annotations

import contextlib
import importlib.util
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import DependencyMissingError, ServerError
from toolkit.runtimes import RUNTIMES

DEFAULT_STATE_DIR = Path("build/server")
DEFAULT_BACKEND_DIR = Path("build/backends")
DOCKER_IMAGE = "nvcr.io/nvidia/tritonserver:24.10-py3"
# Packages our Python models import that NVIDIA's container lacks.
DOCKER_PIP_PACKAGES = ("tokenizers==0.23.3",)
LOG_TAIL_LINES = 40


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
class ServerHandle:
    """A started server: its process id, log file and ports."""

    pid: int
    log_path: Path
    ports: Ports
    process: subprocess.Popen[bytes] | None = None  # set when this Python started it


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
        if source.is_file():
            shutil.copy2(source, python_dir / source.name)
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


def server_command(repository: Path, backend_dir: Path, ports: Ports, log_verbose: int = 0) -> list[str]:
    """The tritonserver argument list for a local run."""
    return [
        str(tritonserver_binary()),
        f"--model-repository={repository.resolve()}",
        f"--backend-directory={backend_dir.resolve()}",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--log-verbose={log_verbose}",
        "--exit-on-error=true",
        "--strict-readiness=true",
        # Python models pass tensors through shared memory that grows on demand: grow it in 16 MiB steps,
        # not 1 MiB, for GPT-2's logits (hundreds of MiB at batch 8). Growth is lazy: nothing is reserved.
        f"--backend-config=python,shm-growth-byte-size={16 << 20}",
    ]


def docker_command(
    repository: Path,
    ports: Ports = Ports(),
    *,
    gpus: str = "all",
    image: str = DOCKER_IMAGE,
    log_verbose: int = 0,
    pip_packages: tuple[str, ...] = DOCKER_PIP_PACKAGES,
) -> list[str]:
    """``docker run`` of NVIDIA's tritonserver container on ``repository`` (native ORT/TensorRT backends there)."""
    inside = [
        "tritonserver",
        "--model-repository=/models",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--log-verbose={log_verbose}",
    ]
    script = " ".join(inside)
    if pip_packages:
        script = f"pip install --quiet {shlex.join(pip_packages)} && exec {script}"
    return [
        "docker", "run", "--rm", f"--gpus={gpus}", "--shm-size=1g",
        *(f"-p{port}:{port}" for port in ports.as_list()),
        "-v", f"{repository.resolve()}:/models:ro",
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


def log_errors(log_path: Path, limit: int = 10) -> list[str]:
    """The server log's error messages (glog ``E`` lines), deduplicated; the big status tables bury them."""
    if not log_path.is_file():
        return []
    messages: dict[str, None] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        match = re.match(r'E\d{4} [\d:.]+ +\d+ [^\]]+\] "?(.*)', line)
        # CPU machines always log the missing CUDA driver; it is not why a start failed.
        if match and "CudaDriverHelper" not in match.group(1):
            messages.setdefault(match.group(1).split("\\n")[0].rstrip('"\\ ')[:300])  # the log escapes newlines
    return list(messages)[:limit]


def _startup_failure(what: str, log_path: Path) -> ServerError:
    failures = "".join(f"\n  {message}" for message in log_errors(log_path))
    return ServerError(f"tritonserver {what}{failures}\nlast {LOG_TAIL_LINES} log lines of {log_path}:\n{log_tail(log_path)}")


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
        if is_ready(handle.ports):
            return
        time.sleep(0.5)
    raise _startup_failure(f"not ready after {timeout:.0f} s (raise --timeout)", handle.log_path)


def start_server(
    repository: Path,
    ports: Ports = Ports(),
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    log_verbose: int = 0,
    timeout: float = 120.0,
) -> ServerHandle:
    """Start tritonserver in the background (pid and log under ``state_dir``) and wait until ready.

    On failure the server is stopped and ServerError carries the last log lines.
    """
    if not repository.is_dir():
        raise ServerError(f"model repository {repository} does not exist: write it first (--repository)")
    busy = [port for port in ports.as_list() if port_in_use(port)]
    if busy:
        raise ServerError(f"ports {busy} are already in use: stop that server or pick other ports (--http-port ...)")
    state_dir.mkdir(parents=True, exist_ok=True)
    backend_dir = prepare_backend_dir(state_dir.parent / "backends")  # build/server -> build/backends
    log_path = state_dir / "tritonserver.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server_command(repository, backend_dir, ports, log_verbose),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(),
            start_new_session=True,  # own process group: stop_server signals the stubs too
        )
    (state_dir / "tritonserver.pid").write_text(f"{process.pid} {ports.http} {ports.grpc} {ports.metrics}\n")
    handle = ServerHandle(process.pid, log_path, ports, process)
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
    pid, http, grpc, metrics = (int(value) for value in pid_file.read_text().split())
    try:  # a stale pid file may name a pid the system has since given to another program
        is_server = b"tritonserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        is_server = False
    if not is_server:
        pid_file.unlink()
        return None
    return ServerHandle(pid, state_dir / "tritonserver.log", Ports(http, grpc, metrics))


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
    while any(port_in_use(port) for port in handle.ports.as_list()):
        if time.monotonic() > deadline:
            raise ServerError(f"ports {handle.ports.as_list()} still in use {timeout:.0f} s after stopping pid {handle.pid}")
        time.sleep(0.2)
    if state_dir is not None:
        (state_dir / "tritonserver.pid").unlink(missing_ok=True)


@contextlib.contextmanager
def running_server(
    repository: Path,
    ports: Ports | None = None,
    *,
    state_dir: Path = DEFAULT_STATE_DIR,
    log_verbose: int = 0,
    timeout: float = 120.0,
) -> Iterator[ServerHandle]:
    """A ready server for the ``with`` block, always stopped afterwards; free ports when ``ports`` is None."""
    ports = ports or free_ports()
    handle = start_server(repository, ports, state_dir=state_dir, log_verbose=log_verbose, timeout=timeout)
    try:
        yield handle
    finally:
        stop_server(handle, state_dir=state_dir)
