"""Timing: the timing loop (``time_callable``, ``time_for``), PyTorch eager timing, GPU memory in use, engine
file sizes, and the records a timed shape produces.

Engines are timed through their runtime plug-in (``toolkit.runtimes``), each in a process of its own
(``toolkit.measurement.isolated``), on the host arrays a :class:`TimingJob` carries.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from toolkit.environment import nvidia_smi_query
from toolkit.errors import BadInputError, DependencyMissingError

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)

Device = Literal["cpu", "cuda"]
Shape = tuple[int, int]  # (batch, sequence length)
Row = dict[str, Any]  # one timed shape: status "ok" and a Timing's fields, or status "error" and its error


def failure(error: BaseException, limit: int = 2000) -> dict[str, str]:
    """The fields of a record whose measurement raised ``error`` (message cut to ``limit`` characters)."""
    return {"status": "error", "error": f"{type(error).__name__}: {error}"[:limit]}


@dataclass(frozen=True)
class Timing:
    """Wall-clock statistics of ``runs`` calls after ``warmup`` discarded calls, in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    runs: int
    warmup: int

    def as_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON records."""
        return asdict(self)


@dataclass(frozen=True)
class TimingBudget:
    """How long to time a shape: ``target_seconds`` of runs (between ``min_runs`` and ``max_runs``) after
    ``warmup`` untimed calls (:func:`time_for`)."""

    target_seconds: float = 0.3
    min_runs: int = 10
    max_runs: int = 200
    warmup: int = 3

    @classmethod
    def fixed(cls, runs: int, warmup: int) -> TimingBudget:
        """Exactly ``runs`` timed calls after ``warmup``."""
        return cls(0.0, runs, runs, warmup)


@dataclass(frozen=True)
class TimingJob:
    """One engine file timed at each shape of ``feeds`` (host arrays by input name, cast to the engine's own
    input types), on ``device``; on CUDA with a CUDA graph up to ``graph_token_limit`` tokens (batch x length).
    ``options`` are the runtime's own (ONNX Runtime: CUDA EP provider options)."""

    path: Path
    feeds: Mapping[Shape, Mapping[str, np.ndarray]]
    device: Device
    budget: TimingBudget = TimingBudget()
    graph_token_limit: int = 4096
    options: Mapping[str, str] = field(default_factory=dict)


def time_callable(fn: Callable[[], object], runs: int = 50, warmup: int = 5) -> Timing:
    """Call ``fn`` ``warmup`` times, then time ``runs`` calls; ``fn`` must block until done."""
    if runs < 1 or warmup < 0:
        raise BadInputError(f"runs={runs}, warmup={warmup}: need runs >= 1 and warmup >= 0; fix --runs/--warmup")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    ordered = sorted(samples)
    return Timing(
        median_ms=statistics.median(ordered),
        p90_ms=ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        mean_ms=statistics.fmean(ordered),
        min_ms=ordered[0],
        runs=runs,
        warmup=warmup,
    )


def time_for(fn: Callable[[], object], budget: TimingBudget) -> Timing:
    """Warm up, time one call, then time as many calls as fit ``budget.target_seconds`` (between its min and
    max runs): fast shapes get many samples, slow ones a bounded time."""
    for _ in range(budget.warmup):
        fn()
    started = time.perf_counter()
    fn()
    one_run_s = max(time.perf_counter() - started, 1e-6)
    runs = int(min(budget.max_runs, max(budget.min_runs, budget.target_seconds / one_run_s)))
    timing = time_callable(fn, runs=runs, warmup=0)
    return replace(timing, warmup=budget.warmup + 1)  # the sizing call was one more untimed call


def time_torch(
    module: torch.nn.Module,
    inputs: Mapping[str, np.ndarray | torch.Tensor],
    device: Device = "cpu",
    runs: int = 50,
    warmup: int = 5,
    dtype: torch.dtype | None = None,
) -> Timing:
    """Time PyTorch eager ``module(**inputs)`` under ``inference_mode`` on ``device``."""
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise DependencyMissingError("PyTorch sees no CUDA device; pass --device cpu")
    module = module.eval().to(device)
    if dtype is not None:
        module = module.to(dtype)
    tensors = {n: torch.as_tensor(v).to(device) for n, v in inputs.items()}

    def call() -> None:
        with torch.inference_mode():
            module(**tensors)
        if device == "cuda":
            torch.cuda.synchronize()

    return time_callable(call, runs=runs, warmup=warmup)


def file_size_mib(path: Path) -> float:
    """Size of an engine file plus its ``.data`` external-weights file, if any, in MiB."""
    path = Path(path)
    total = path.stat().st_size
    for extra in path.parent.glob(path.name + "*.data"):
        total += extra.stat().st_size
    return total / (1024 * 1024)


def gpu_memory_used_mib(index: int = 0) -> float | None:
    """Memory in use on GPU ``index`` (NVML through pynvml, else nvidia-smi); None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            return float(info.used) / (1024 * 1024)
        finally:
            pynvml.nvmlShutdown()
    except Exception as error:  # no pynvml or no driver: fall through to nvidia-smi
        log.debug("NVML unavailable (%s); trying nvidia-smi", error)
    rows = nvidia_smi_query("memory.used")
    if rows is None or len(rows) <= index:
        return None
    try:
        return float(rows[index][0])
    except ValueError:
        return None
