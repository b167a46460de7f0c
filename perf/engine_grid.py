"""The engine-only grid: models x precisions x batch sizes x sequence lengths, timed and checked in one run.

Per model, each precision's engine is timed at every shape by its runtime plug-in (``toolkit.runtimes``), in a
process that holds only that engine (``toolkit.measurement.isolated``), as Triton's stub process holds it:
ONNX Runtime CUDA sessions sharing a process slow each other's replays (about 10% at BERT-base b1 s128 on an
H100). The precisions are timed one after the other within minutes, on the same inputs. On CUDA an ONNX
Runtime point runs through ``toolkit/runtimes/ort_device.py``, the code the Triton backend serves with: I/O
binding on preallocated device buffers and, up to ``graph_token_limit`` tokens (batch x length), a CUDA graph
per shape, as the server replays them. Then, in this process, each precision's first output is compared with
FP32's on the same inputs (``toolkit.measurement.compare``: cosine, errors, NaN/Inf).

Also measured, once per model: the CPU FP32 baseline (the same FP32 graph on the CPU execution
provider) at ``cpu_points``, PyTorch eager FP32/FP16 at ``torch_points``, and the GPU memory each
precision's engine takes at the largest shape. Records land in ``<out>/<device>/grid.jsonl`` as they
finish, each with a ``kind``: ``engine``, ``cpu_baseline``, ``torch`` or ``memory`` (``perf.records``).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from perf import results as rf
from perf.engine_timing import CPU_BASELINE_RUNTIME
from perf.inputs import batch_arrays
from perf.records import GridCpuBaseline, GridEnginePoint, GridEnvironment, GridMeasurement, GridMemory, GridTorchPoint
from toolkit.environment import code_version, device_info, package_versions
from toolkit.errors import BadInputError
from toolkit.measurement.compare import compare_arrays
from toolkit.measurement.timing import Device, TimingBudget, TimingJob, failure, file_size_mib, time_torch
from toolkit.names import DEFAULT_PRECISIONS, Precision
from toolkit.repository.lookup import engine_input_names, find_tokenizer, require_engine_file
from toolkit.runtimes import DEFAULT_RUNTIME, EngineRunner, get_runtime

REFERENCE = Precision.FP32.value
# Outputs above this many elements are compared on evenly spaced rows (NaN/Inf still counted on all):
# GPT-2's logits at batch 32 x 512 tokens are 823 M values.
FULL_COMPARE_ELEMENTS = 16_000_000
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridPlan:
    """What one grid run measures, and how carefully."""

    models: tuple[str, ...]
    precisions: tuple[str, ...] = tuple(p.value for p in DEFAULT_PRECISIONS)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    seq_lens: tuple[int, ...] = (32, 64, 128, 256, 512)
    device: Device = "cuda"
    graph_token_limit: int = 4096  # CUDA graphs up to this many tokens; larger shapes are bound by compute
    target_seconds: float = 0.3  # timing budget per point: runs = budget / one run's time, clamped
    min_runs: int = 10
    max_runs: int = 200
    warmup: int = 3
    cpu_points: tuple[tuple[int, int], ...] = ((1, 32), (1, 128), (1, 512), (8, 128), (32, 128), (32, 512))
    cpu_target_seconds: float = 3.0
    torch_points: tuple[tuple[int, int], ...] = ((1, 128), (32, 512))
    runtime: str = DEFAULT_RUNTIME

    def __post_init__(self) -> None:
        get_runtime(self.runtime)
        for precision in self.precisions:
            Precision(precision)
        if REFERENCE not in self.precisions:
            raise BadInputError(f"the grid compares every precision with {REFERENCE}: include it in --precisions")
        if not self.models or min(self.batch_sizes + self.seq_lens) < 1 or self.min_runs < 1:
            raise BadInputError("the grid needs models, batch sizes and lengths >= 1, and --min-runs >= 1")
        if self.device not in ("cpu", "cuda"):
            raise BadInputError(f"device {self.device!r}: choose cpu or cuda")

    def shapes(self) -> list[tuple[int, int]]:
        """(batch, length) points, smallest first, so a run cut short has the cheap points."""
        return sorted(((b, s) for b in self.batch_sizes for s in self.seq_lens), key=lambda p: (p[0] * p[1], p))

    def budget(self) -> TimingBudget:
        """How long each point is timed."""
        return TimingBudget(self.target_seconds, self.min_runs, self.max_runs, self.warmup)


def _fidelity(reference: np.ndarray, candidate: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Metrics of one output against FP32's, on evenly spaced token rows when the output is huge."""
    nan, inf = int(np.isnan(candidate).sum()), int(np.isinf(candidate).sum())
    rows_total = int(np.prod(candidate.shape[:-1])) if candidate.ndim > 1 else 1
    ref, cand, row_mask = reference, candidate, mask
    if candidate.size > FULL_COMPARE_ELEMENTS and candidate.ndim == 3:
        step = int(np.ceil(candidate.size / FULL_COMPARE_ELEMENTS))
        ref = reference.reshape(-1, 1, reference.shape[-1])[::step]
        cand = candidate.reshape(-1, 1, candidate.shape[-1])[::step]
        row_mask = mask.reshape(-1, 1)[::step]
    metrics = compare_arrays(ref, cand, row_mask if row_mask.shape == cand.shape[:2] else None)
    return {
        **{k: v for k, v in asdict(metrics).items() if k in ("cosine_min", "cosine_mean", "max_abs", "mean_abs", "max_rel")},
        "nan_count": nan,
        "inf_count": inf,
        "rows_compared": int(cand.size // cand.shape[-1]),
        "rows_total": rows_total,
    }


def _model_files(repository: Path, model: str, plan: GridPlan) -> dict[str, Path]:
    return {precision: require_engine_file(repository, model, precision, plan.runtime) for precision in plan.precisions}


def _shape_feeds(tokenizer: Path, names: list[str], shapes: list[tuple[int, int]]) -> dict[tuple[int, int], dict[str, np.ndarray]]:
    return {(batch, seq): batch_arrays(tokenizer, names, batch, seq) for batch, seq in shapes}


def _engine_points(
    plan: GridPlan, model: str, files: dict[str, Path], tokenizer: Path, names: list[str], tick: Callable[[], None]
) -> Iterator[GridEnginePoint]:
    runtime = get_runtime(plan.runtime)
    feeds = _shape_feeds(tokenizer, names, plan.shapes())
    timings = {
        precision: runtime.time_job(TimingJob(path, feeds, plan.device, plan.budget(), plan.graph_token_limit), on_row=lambda _row: tick())
        for precision, path in files.items()
    }
    engines: dict[str, EngineRunner] = {precision: runtime.load(path, plan.device) for precision, path in files.items()}
    for shape, inputs in feeds.items():
        outputs: dict[str, np.ndarray] = {}
        for precision in plan.precisions:  # FP32 first: the reference of the others
            record = _engine_point(model, precision, timings[precision][shape])
            if record.ok:
                try:
                    engine = engines[precision]
                    outputs[precision] = engine.run(inputs, [engine.output_names[0]])[engine.output_names[0]]
                    if precision != REFERENCE and REFERENCE in outputs:
                        record = replace(record, **_fidelity(outputs[REFERENCE], outputs[precision], inputs["attention_mask"]))
                except Exception as error:  # one failing point is this point's result; the grid goes on
                    record = record.failed(error)
            yield record
        outputs.clear()
    del engines
    gc.collect()


def _engine_point(model: str, precision: str, timing: dict[str, Any]) -> GridEnginePoint:
    """A precision's point from its timing row (which holds the shape)."""
    return GridEnginePoint.from_fields({"model": model, "precision": precision, **timing, "cuda_graph": bool(timing.get("cuda_graph"))})


def _cpu_points(plan: GridPlan, model: str, fp32: Path, tokenizer: Path, names: list[str]) -> Iterator[GridCpuBaseline]:
    """The baseline is timed in a process of its own too: both sides of a speedup come from clean processes."""
    budget = TimingBudget(plan.cpu_target_seconds, 3, plan.max_runs, 1)
    feeds = _shape_feeds(tokenizer, names, list(plan.cpu_points))
    timings = get_runtime(CPU_BASELINE_RUNTIME).time_job(TimingJob(fp32, feeds, "cpu", budget))
    for batch, seq in plan.cpu_points:
        yield GridCpuBaseline.from_fields({"model": model, "precision": REFERENCE, **timings[(batch, seq)]})


def _torch_points(plan: GridPlan, model: str, factory: Callable[[], Any], tokenizer: Path, names: list[str]) -> Iterator[GridTorchPoint]:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # FP32 means FP32, as in every other measurement
    torch.backends.cudnn.allow_tf32 = False
    module = factory()
    for batch, seq in plan.torch_points:
        for precision, dtype in ((REFERENCE, torch.float32), (Precision.FP16.value, torch.float16)):
            point = {"model": model, "precision": precision, "batch_size": batch, "seq_len": seq}
            try:
                feeds = batch_arrays(tokenizer, names, batch, seq)
                timing = time_torch(module, feeds, plan.device, runs=plan.min_runs * 3, warmup=plan.warmup, dtype=dtype)
                record = GridTorchPoint.from_fields({**point, "status": "ok", **timing.as_dict()})
            except Exception as error:
                record = GridTorchPoint.from_fields({**point, **failure(error)})
            yield record
    del module
    if plan.device == "cuda":
        torch.cuda.empty_cache()


def _memory_points(plan: GridPlan, model: str, files: dict[str, Path], tokenizer: Path, names: list[str]) -> Iterator[GridMemory]:
    batch, seq = max(plan.batch_sizes), max(plan.seq_lens)
    feeds = batch_arrays(tokenizer, names, batch, seq)
    for precision, path in files.items():
        point = GridMemory(model=model, precision=precision, batch_size=batch, seq_len=seq, file_mib=file_size_mib(path), status="ok")
        try:
            record = replace(point, gpu_memory_mib=get_runtime(plan.runtime).memory_mib(path, feeds, "cuda"))
        except Exception as error:
            record = point.failed(error)
        gc.collect()
        yield record


def run_grid(
    plan: GridPlan,
    repository: Path = Path("model_repository"),
    out: Path = Path("results"),
    torch_factories: Mapping[str, Callable[[], Any]] | None = None,
    cpu_baseline: bool = True,
    progress: bool = True,
    echo: Callable[[GridMeasurement], None] | None = None,
) -> Path:
    """Measure ``plan`` and append every record to ``<out>/<device>/grid.jsonl``; return that path.

    ``torch_factories`` maps a model to a zero-argument function returning its PyTorch module (eager
    timings); ``echo`` sees every record as it lands.
    """
    from tqdm import tqdm

    info = device_info()
    if plan.device == "cuda" and info["gpu"] is None:
        raise BadInputError("no GPU found (nvidia-smi): pass --device cpu")
    path = Path(out) / info["name"] / rf.GRID_FILE
    stamp = {"device": info["name"], "gpu": info["gpu"], "run_id": f"{time.time():.0f}"}
    environment = GridEnvironment(**stamp, code=code_version(), device_info=info, packages=package_versions(), plan=asdict(plan))
    rf.append_record(path, environment)
    per_model = len(plan.shapes()) * len(plan.precisions)
    bar = tqdm(total=per_model * len(plan.models), desc="engine grid", unit="point", disable=not progress)
    for model in plan.models:
        for stream in _model_streams(plan, model, repository, torch_factories, cpu_baseline, bar.update):
            for record in stream:
                stamped = replace(record, **stamp, time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
                rf.append_record(path, stamped)
                if echo:
                    echo(stamped)
    bar.close()
    return path


def _model_streams(
    plan: GridPlan,
    model: str,
    repository: Path,
    torch_factories: Mapping[str, Callable[[], Any]] | None,
    cpu_baseline: bool,
    tick: Callable[[], None],
) -> list[Iterator[GridMeasurement]]:
    """One model's measurements in the order they run: GPU memory first (nothing else on the GPU yet), the
    engines at every shape, the CPU baseline, PyTorch eager."""
    files = _model_files(repository, model, plan)
    tokenizer = find_tokenizer(repository, model, None)
    names = list(engine_input_names(repository, model, REFERENCE, plan.runtime))
    streams: list[Iterator[GridMeasurement]] = []
    if plan.device == "cuda":
        streams.append(_memory_points(plan, model, files, tokenizer, names))
    streams.append(_engine_points(plan, model, files, tokenizer, names, tick))
    if cpu_baseline and plan.device == "cuda":
        baseline = require_engine_file(repository, model, REFERENCE, CPU_BASELINE_RUNTIME)
        streams.append(_cpu_points(plan, model, baseline, tokenizer, names))
    if torch_factories and model in torch_factories:
        streams.append(_torch_points(plan, model, torch_factories[model], tokenizer, names))
    return streams
