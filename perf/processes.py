"""What the server's processes (Triton and its Python stubs) and the load generator use of the host, read from /proc.

- ``server_rss_mib``: resident memory of the server and every descendant.
- ``CpuMeter.around(run)``: CPU seconds each process group spent while ``run`` ran: ``tritonserver`` (gRPC, the
  scheduler, the ensemble), each Python model by name (its stubs' instances summed), and ``client``, the
  children this process waited for meanwhile (perf_analyzer). With the wall time and the host's core count, a
  load level's CPU cost per request and how busy the host was: what bounds serving when the GPU is idle.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

Result = TypeVar("Result")
SERVER, CLIENT = "tritonserver", "client"
STUB = "triton_python_backend_stub"


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        children.setdefault(int(fields["PPid"].strip()), []).append(int(fields["Pid"].strip()))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children.get(current, [])
    return found


def server_rss_mib(pid: int | None) -> float | None:
    """Resident memory of process ``pid`` and every descendant (Triton and its Python stubs), in MiB."""
    if pid is None:
        return None
    total = 0.0
    for current in descendants(pid):
        try:
            rss = next(line for line in Path(f"/proc/{current}/status").read_text().splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            continue
        total += float(rss.split()[1]) / 1024.0
    return round(total, 1) if total else None


def process_group(pid: int, root: int) -> str:
    """``tritonserver`` for the server itself, the model's name for a Python stub (its model file's folder two levels
    up: ``<repository>/<model>/<version>/model.py``), else the process's own name."""
    if pid == root:
        return SERVER
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    if argv and argv[0].decode(errors="replace").endswith(STUB) and len(argv) > 1:
        return Path(argv[1].decode(errors="replace")).parent.parent.name
    return Path(argv[0].decode(errors="replace")).name if argv and argv[0] else "unknown"


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU seconds of process ``pid`` (all its threads) so far; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3, utime 14, stime 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Per process of the server's tree: its group and CPU seconds so far."""
    seen = {}
    for current in descendants(pid):
        seconds = cpu_seconds(current)
        if seconds is not None:
            seen[current] = (process_group(current, pid), seconds)
    return seen


def children_cpu() -> float:
    """CPU seconds of this process's children that have ended and been waited for (perf_analyzer runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds per process group around a call, for the server with pid ``server_pid`` (None: the client's only)."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid

    def around(self, run: Callable[[], Result]) -> tuple[Result, dict[str, Any]]:
        """``run()``'s result and ``{"wall_s", "cores", "seconds": {group: CPU seconds}}`` over it. A process that
        started during the run counts from zero; one that ended during it is missing from the end (and left out)."""
        before = server_cpu(self.server_pid) if self.server_pid else {}
        client, start = children_cpu(), time.perf_counter()
        result = run()
        wall, client = time.perf_counter() - start, children_cpu() - client
        after = server_cpu(self.server_pid) if self.server_pid else {}
        seconds: dict[str, float] = {CLIENT: client}
        for pid, (group, now) in after.items():
            seconds[group] = seconds.get(group, 0.0) + now - before.get(pid, (group, 0.0))[1]
        rounded = {group: round(value, 3) for group, value in sorted(seconds.items())}
        return result, {"wall_s": round(wall, 3), "cores": os.cpu_count() or 1, "seconds": rounded}
