"""Engine-only timings outside Triton for one shape (``python -m perf engine``): each precision's engine in a
process of its own through its runtime plug-in (``toolkit.runtimes``), the CPU FP32 baseline (the paper's:
the FP32 ONNX graph on ONNX Runtime's CPU provider), and optionally PyTorch eager, on the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from perf import results as rf
from perf.inputs import batch_arrays
from perf.records import EngineTiming
from toolkit.environment import device_info
from toolkit.measurement.timing import Device, Row, TimingBudget, TimingJob, failure, time_torch
from toolkit.repository.lookup import engine_input_names, find_tokenizer, require_engine_file
from toolkit.runtimes import DEFAULT_RUNTIME, get_runtime

if TYPE_CHECKING:
    import torch

ENGINE_FILE = "engine.jsonl"
CPU_BASELINE_RUNTIME = DEFAULT_RUNTIME  # the paper's CPU baseline: the FP32 ONNX graph on ONNX Runtime's CPU provider


def time_one_shape(
    path: Path,
    feeds: Mapping[str, np.ndarray],
    device: Device,
    budget: TimingBudget,
    runtime: str = DEFAULT_RUNTIME,
    cuda_graph: bool = False,
) -> Row:
    """One shape of one engine timed in a process of its own; the row without the shape (the caller's)."""
    batch, seq = next(iter(feeds.values())).shape[:2]
    job = TimingJob(path, {(batch, seq): feeds}, device, budget, graph_token_limit=(1 << 62) if cuda_graph else 0)
    row = get_runtime(runtime).time_job(job)[(batch, seq)]
    return {key: value for key, value in row.items() if key not in ("batch_size", "seq_len")}


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
    runtime: str = DEFAULT_RUNTIME,
) -> tuple[list[EngineTiming], Path]:
    """Time each precision's ``runtime`` engine of ``model`` on ``device``, the CPU FP32 baseline, and optionally
    PyTorch eager (``torch_factory()``) on ``device``; ``cpu_baseline_runs`` 0 skips the CPU baseline (default:
    ``runs``); append records to ``out/<device>/engine.jsonl`` and return them with that path. A failing engine
    is recorded and the others go on."""
    info = device_info()
    path = Path(out) / info["name"] / ENGINE_FILE
    names = engine_input_names(repository, model, precisions[0] if precisions else "fp32", runtime)
    feeds = batch_arrays(find_tokenizer(repository, model, tokenizer), names, batch_size, seq_len)
    budget = TimingBudget.fixed(runs, min(warmup, runs))
    common = {"model": model, "batch_size": batch_size, "seq_len": seq_len, "device": info["name"], "gpu": info["gpu"]}
    jobs = _jobs(model, repository, precisions, runtime, device, cuda_graph, feeds, budget, runs, warmup, cpu_baseline_runs)
    if torch_factory is not None:
        jobs.append((f"torch_eager_{device}_fp32", "fp32", lambda: {"status": "ok", **time_torch(torch_factory(), feeds, device, runs, warmup).as_dict()}))
    records = []
    for name, precision, job in jobs:
        started = {"runner": name, "precision": precision, **common, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            row = job()
        except Exception as error:  # one failing engine must not stop the others
            row = failure(error)
        record = EngineTiming.from_fields({**started, **row})
        rf.append_record(path, record)
        records.append(record)
    return records, path


Job = tuple[str, str, Callable[[], Row]]


def _jobs(
    model: str, repository: Path, precisions: tuple[str, ...], runtime: str, device: Device, cuda_graph: bool,
    feeds: Mapping[str, np.ndarray], budget: TimingBudget, runs: int, warmup: int, cpu_baseline_runs: int | None,
) -> list[Job]:  # fmt: skip
    """(runner name, precision, timing call) of each engine, then of the CPU baseline unless it is one of them."""

    def engine_job(precision: str, on: Device, graph: bool, engine_runtime: str, job_budget: TimingBudget) -> Callable[[], Row]:
        return lambda: time_one_shape(require_engine_file(repository, model, precision, engine_runtime), feeds, on, job_budget, engine_runtime, graph)

    jobs: list[Job] = [
        (f"{runtime}_{device}{'_graph' if cuda_graph else ''}_{precision}", precision, engine_job(precision, device, cuda_graph, runtime, budget))
        for precision in precisions
    ]
    baseline_runs = runs if cpu_baseline_runs is None else cpu_baseline_runs
    if baseline_runs and (device != "cpu" or "fp32" not in precisions or runtime != CPU_BASELINE_RUNTIME):
        baseline = TimingBudget.fixed(baseline_runs, min(warmup, baseline_runs))
        jobs.append(("cpu_baseline_fp32", "fp32", engine_job("fp32", "cpu", False, CPU_BASELINE_RUNTIME, baseline)))
    return jobs
