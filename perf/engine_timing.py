"""Engine-only timings outside Triton: the timing loop (``time_callable``, ``time_for``), PyTorch eager,
GPU memory (NVML or nvidia-smi), engine file sizes, and ``time_engines`` for one shape of every precision.

ONNX Runtime engines are timed in a process of their own (``perf.isolated_timing``), the FP32 CPU baseline
(the paper's) among them, on the same inputs as every other measurement.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.engines.onnxrt import Device, session_for
from toolkit.environment import nvidia_smi_query
from toolkit.errors import BadInputError, DependencyMissingError

if TYPE_CHECKING:
    import numpy as np
    import torch

log = logging.getLogger(__name__)


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


def time_for(fn: Callable[[], object], target_seconds: float, min_runs: int = 10, max_runs: int = 200, warmup: int = 3) -> Timing:
    """Warm up, time one call, then time as many calls as fit ``target_seconds`` (between ``min_runs`` and
    ``max_runs``): fast shapes get many samples, slow ones a bounded time."""
    for _ in range(warmup):
        fn()
    started = time.perf_counter()
    fn()
    one_run_s = max(time.perf_counter() - started, 1e-6)
    timing = time_callable(fn, runs=int(min(max_runs, max(min_runs, target_seconds / one_run_s))), warmup=0)
    return replace(timing, warmup=warmup + 1)  # the sizing call was one more untimed call


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


def session_memory_mib(path: Path, inputs: Mapping[str, np.ndarray], device: Device = "cuda") -> float | None:
    """GPU memory one engine adds once loaded and run once (None on CPU or without a GPU)."""
    if device != "cuda":
        return None
    before = gpu_memory_used_mib()
    if before is None:
        return None
    session = session_for(path, device)
    session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})
    after = gpu_memory_used_mib()
    del session
    return None if after is None else max(0.0, after - before)


def time_engines(
    model: str,
    repository: Path,
    out: Path,
    precisions: tuple[str, ...] = ("fp32", "fp16", "hybrid"),
    batch_size: int = 1,
    seq_len: int = 128,
    device: Device = "cpu",
    cuda_graph: bool = False,
    runs: int = 50,
    warmup: int = 5,
    tokenizer: Path | None = None,
    torch_factory: Callable[[], torch.nn.Module] | None = None,
    cpu_baseline_runs: int | None = None,
) -> tuple[list[dict[str, Any]], Path]:
    """Time each precision's ONNX engine of ``model`` on ``device``, the CPU FP32 baseline, and
    optionally PyTorch eager (``torch_factory()``) on ``device``; ``cpu_baseline_runs`` 0 skips the CPU
    baseline (default: ``runs``); append records to
    ``out/<device>/engine.jsonl`` and return them with that path. A failing engine is recorded.
    """
    from perf import results as rf
    from perf.environment import device_info
    from perf.inputs import batch_arrays
    from perf.isolated_timing import time_shape
    from toolkit.repository.lookup import engine_input_names, find_tokenizer, require_engine_file

    info = device_info()
    path = Path(out) / info["name"] / "engine.jsonl"
    token_file = find_tokenizer(repository, model, tokenizer)
    common = {
        "model": model,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "device": info["name"],
        "gpu": info["gpu"],
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    jobs: list[tuple[str, str, Callable[[], dict[str, Any]]]] = []

    def onnx_job(precision: str, on: Device, graph: bool, job_runs: int = runs) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:  # in a process of its own, as the grid times engines (perf.isolated_timing)
            engine = require_engine_file(repository, model, precision)
            names = tuple(engine_input_names(repository, model, precision, "onnxruntime"))
            return time_shape(engine, (batch_size, seq_len), token_file, names, on, job_runs, min(warmup, job_runs), cuda_graph=graph)

        return run

    for precision in precisions:
        runner = f"onnxruntime_{device}{'_graph' if cuda_graph else ''}_{precision}"
        jobs.append((runner, precision, onnx_job(precision, device, cuda_graph)))
    baseline_runs = runs if cpu_baseline_runs is None else cpu_baseline_runs
    if baseline_runs and (device != "cpu" or "fp32" not in precisions):
        jobs.append(("cpu_baseline_fp32", "fp32", onnx_job("fp32", "cpu", False, baseline_runs)))
    if torch_factory is not None:

        def torch_job() -> dict[str, Any]:
            names = engine_input_names(repository, model, "fp32", "onnxruntime")
            timing = time_torch(torch_factory(), batch_arrays(token_file, names, batch_size, seq_len), device, runs=runs, warmup=warmup)
            return {"status": "ok", **timing.as_dict()}

        jobs.append((f"torch_eager_{device}_fp32", "fp32", torch_job))
    records = []
    for name, precision, job in jobs:
        record: dict[str, Any] = {"key": f"{model}|{name}|b{batch_size}|s{seq_len}", "runner": name, "precision": precision, **common}
        try:
            record.update(job())
        except Exception as error:  # one failing engine must not stop the others
            record.update(rf.failure(error))
        rf.append_jsonl(path, record)
        records.append(record)
    return records, path
