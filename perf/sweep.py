"""Sweeps over models x precisions x batch sizes x sequence lengths x concurrency, through Triton.

Each configuration is one perf_analyzer run whose raw CSV is kept under ``raw/`` and whose parsed
record is appended to ``<out>/<device>/perf.jsonl``. A configuration already in that file is
skipped (the sweep resumes), and one that fails is recorded with its error while the sweep goes on.
The same folder gets the CPU FP32 baseline of each (model, batch, sequence), engine sizes and
memory, and ``derived.jsonl``: speedups and memory reductions, each computed from this folder's runs.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from perf import results as rf
from perf.analyzer import (
    PerfAnalyzerArgs,
    PerfAnalyzerError,
    perf_analyzer_version,
    run_perf_analyzer,
)
from perf.engine_timing import CPU_BASELINE_RUNTIME, time_one_shape
from perf.environment import manifest_hash
from perf.inputs import batch_arrays
from perf.records import CpuBaseline, DerivedRow, EngineMemory, PerfPoint, SweepConfig, SweepEnvironment, Target
from perf.server_stats import StatisticsReader
from toolkit.environment import code_version, device_info, package_versions, slug
from toolkit.errors import BadInputError, ToolkitError
from toolkit.measurement.timing import TimingBudget, failure, file_size_mib
from toolkit.names import ATTENTION_MASK, DEFAULT_PRECISIONS, INPUT_IDS, TEXT, TOKEN_TYPE_IDS, Precision
from toolkit.repository.lookup import engine_file, engine_input_names, find_tokenizer
from toolkit.runtimes import RUNTIMES, get_runtime

Runner = Callable[[PerfAnalyzerArgs], list[dict[str, float]]]
log = logging.getLogger(__name__)
UNSTABLE = "Failed to obtain stable measurement"
Measured = TypeVar("Measured", PerfPoint, CpuBaseline, EngineMemory)  # the sweep's records, each with a status


@dataclass(frozen=True)
class Sweep:
    """A named grid plus how carefully each point is measured."""

    name: str
    models: tuple[str, ...]
    precisions: tuple[str, ...] = tuple(p.value for p in DEFAULT_PRECISIONS)
    batch_sizes: tuple[int, ...] = (1,)
    seq_lens: tuple[int, ...] = (128,)
    concurrencies: tuple[int, ...] = (1,)
    targets: tuple[Target, ...] = ("engine",)
    runtimes: tuple[str, ...] = tuple(RUNTIMES)
    measurement_request_count: int = 50
    stability_percentage: float = 25.0
    max_trials: int = 10
    baseline_runs: int = 10
    baseline_warmup: int = 2

    def __post_init__(self) -> None:
        for precision in self.precisions:
            Precision(precision)
        for runtime in self.runtimes:
            get_runtime(runtime)
        if not self.models or min(self.batch_sizes + self.seq_lens + self.concurrencies) < 1:
            raise BadInputError(f"sweep {self.name!r}: needs models, and batch/seq/concurrency values >= 1")
        bad = set(self.targets) - {"engine", "ensemble"}
        if bad:
            raise BadInputError(f"targets {sorted(bad)} unknown; pass --targets engine,ensemble")

    def configs(self) -> list[SweepConfig]:
        """Every configuration of the grid, cheapest first within each model."""
        grid = itertools.product(
            self.models,
            self.runtimes,
            self.targets,
            self.seq_lens,
            self.batch_sizes,
            self.precisions,
            self.concurrencies,
        )
        return [SweepConfig(m, p, r, t, b, s, c) for m, r, t, s, b, p, c in grid]


# Windows for GPU sweeps: latencies of a few ms need few requests per window, and device time is short.
GPU_WINDOWS: dict[str, Any] = {"measurement_request_count": 30, "stability_percentage": 15.0, "max_trials": 5, "baseline_runs": 5}

SWEEPS: dict[str, Sweep] = {
    # A few minutes on a laptop CPU: 3 precisions x 2 batches x 2 lengths, engines and ensembles.
    "default": Sweep(
        name="default",
        models=("minilm",),
        batch_sizes=(1, 4),
        seq_lens=(32, 128),
        concurrencies=(1,),
        targets=("engine", "ensemble"),
        measurement_request_count=10,
        max_trials=6,
        baseline_runs=10,
    ),
    # Through Triton on a GPU, within one device call: the key points of the targets (``perf.targets``; the
    # engine-only grid, ``python -m perf grid``, covers the paper's shapes), text-in ensembles, GPU windows.
    "gpu": Sweep(
        name="gpu",
        models=("bert-base-uncased", "minilm"),
        batch_sizes=(1, 8, 32),
        seq_lens=(32, 128, 512),
        concurrencies=(1,),
        targets=("ensemble",),
        **GPU_WINDOWS,
    ),
    # The paper's grid: 2 models x 3 precisions x 6 batches x 5 lengths x 2 concurrencies = 360 per runtime,
    # through the text-in ensembles: an engine model asked by perf_analyzer (which names no outputs) returns
    # every output, and GPT-2's logits at b32 s512 (3.3 GB) exceed what one gRPC response may carry. The
    # ensembles return what a client uses (pooled vector, next token). perf_analyzer's count windows last at
    # least a second each, so a configuration takes 3 s or more: about 20 minutes of device time in all.
    "paper": Sweep(
        name="paper",
        models=("bert-base-uncased", "gpt2"),
        batch_sizes=(1, 2, 4, 8, 16, 32),
        seq_lens=(32, 64, 128, 256, 512),
        concurrencies=(1, 2),
        targets=("ensemble",),
        **GPU_WINDOWS,
    ),
}


def get_sweep(name: str, **overrides: Any) -> Sweep:
    """A named sweep from ``SWEEPS`` with fields replaced by the non-None ``overrides``."""
    if name not in SWEEPS:
        raise BadInputError(f"unknown sweep {name!r}; pass --plan one of {', '.join(SWEEPS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    return replace(SWEEPS[name], **changes)


def input_names(repository: Path | None, config: SweepConfig) -> tuple[str, ...]:
    """Input names of the Triton model a configuration drives: ``TEXT`` for an ensemble, an engine's from its
    config (without a repository, the three token tensors a BERT tokenizer model emits)."""
    if config.target == "ensemble":
        return (TEXT,)
    if repository is None:
        return (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS)
    return engine_input_names(repository, config.model, config.precision, config.runtime)


@dataclass
class SweepContext:
    """What every record of one sweep run shares."""

    out_dir: Path
    run_id: str
    device: dict[str, Any]
    manifest_hash: str | None
    url: str
    repository: Path | None
    tokenizer: Path | None = None
    metrics_url: str | None = None
    statistics: StatisticsReader | None = None  # per-model server time around each perf_analyzer run
    inputs_cache: dict[tuple[str, int, str], Path] = field(default_factory=dict)

    def stamp(self) -> dict[str, Any]:
        """Fields attached to each record: provenance of the number."""
        return {
            "run_id": self.run_id,
            "device": self.device["name"],
            "gpu": self.device["gpu"],
            "manifest_hash": self.manifest_hash,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def _input_data(ctx: SweepContext, config: SweepConfig, names: tuple[str, ...]) -> Path:
    from perf.inputs import perf_analyzer_data, write_perf_analyzer_data

    cache_key = (config.model, config.seq_len, ",".join(names))
    if cache_key not in ctx.inputs_cache:
        tokenizer = find_tokenizer(ctx.repository, config.model, ctx.tokenizer)
        kind = "text" if names == (TEXT,) else "ids"
        path = ctx.out_dir / "inputs" / f"{slug(config.model)}_s{config.seq_len}_{kind}.json"
        ctx.inputs_cache[cache_key] = write_perf_analyzer_data(path, perf_analyzer_data(tokenizer, names, config.seq_len))
    return ctx.inputs_cache[cache_key]


def _analyzer_args(ctx: SweepContext, sweep: Sweep, config: SweepConfig, csv_path: Path) -> PerfAnalyzerArgs:
    """perf_analyzer's arguments for one configuration: its inputs, load and measurement windows."""
    names = input_names(ctx.repository, config)
    shapes: dict[str, tuple[int, ...]] = {} if names == (TEXT,) else {n: (config.seq_len,) for n in names}
    return PerfAnalyzerArgs(
        model=config.triton_model,
        csv_path=csv_path,
        url=ctx.url,
        batch_size=config.batch_size,
        concurrency=(config.concurrency, config.concurrency),
        input_data=_input_data(ctx, config, names),
        shapes=shapes,
        measurement_request_count=sweep.measurement_request_count,
        stability_percentage=sweep.stability_percentage,
        max_trials=sweep.max_trials,
        collect_metrics=ctx.device["gpu"] is not None,
        metrics_url=ctx.metrics_url,
    )


def measure(ctx: SweepContext, sweep: Sweep, config: SweepConfig, runner: Runner = run_perf_analyzer) -> PerfPoint:
    """Run perf_analyzer on one configuration and return its record (status ``ok`` or ``error``)."""
    stamp = ctx.stamp()  # the time the run started
    found: dict[str, Any] = {}
    csv_path = ctx.out_dir / rf.RAW_DIR / (slug(config.key) + ".csv")
    try:
        args = _analyzer_args(ctx, sweep, config, csv_path)
        found["argv"] = args.argv()

        def run() -> list[dict[str, float]]:
            try:
                return runner(args)
            except PerfAnalyzerError as error:
                if UNSTABLE not in str(error):
                    raise
                # A busy host (laptop, shared CI) misses the stability bar: measure once more with half the rigour.
                relaxed = replace(args, stability_percentage=2 * args.stability_percentage)
                found.update(argv=relaxed.argv(), stability_relaxed_to=relaxed.stability_percentage)
                return runner(relaxed)

        rows, hops = ctx.statistics.around(run) if ctx.statistics else (run(), None)
        row = next((r for r in rows if r.get("concurrency") == config.concurrency), rows[0])
        # hops: each model's server time per request (tokenizer, engine, ensemble); None without statistics
        found.update(status="ok", metrics=row, raw_csv=str(csv_path.relative_to(ctx.out_dir)), hops=hops)
    except (ToolkitError, OSError) as error:
        found.update(status="error", error=f"{type(error).__name__}: {error}")
    return PerfPoint(**asdict(config), **stamp, **found)


def measure_cpu_baseline(ctx: SweepContext, sweep: Sweep, model: str, batch: int, seq: int) -> CpuBaseline:
    """The FP32 ONNX engine of ``model`` on ONNX Runtime's CPU provider at one batch and length, timed in a
    process of its own (``perf.engine_timing.time_one_shape``)."""
    point = {"model": model, "batch_size": batch, "seq_len": seq, **ctx.stamp()}
    try:
        if ctx.repository is None:
            raise BadInputError("the CPU baseline needs --repository with the FP32 ONNX engine")
        path = engine_file(ctx.repository, model, Precision.FP32.value, CPU_BASELINE_RUNTIME)
        if path is None:
            raise BadInputError(f"no FP32 ONNX engine for {model} in {ctx.repository}; build it or pass --no-cpu-baseline")
        names = engine_input_names(ctx.repository, model, Precision.FP32.value, CPU_BASELINE_RUNTIME)
        feeds = batch_arrays(find_tokenizer(ctx.repository, model, ctx.tokenizer), names, batch, seq)
        row = time_one_shape(path, feeds, "cpu", TimingBudget.fixed(sweep.baseline_runs, sweep.baseline_warmup), CPU_BASELINE_RUNTIME)
        measured = {"engine": str(path), **row}
    except Exception as error:  # any runtime failure is this point's result
        measured = failure(error)
    return CpuBaseline.from_fields({**point, **measured})


def measure_engine(ctx: SweepContext, model: str, precision: str, runtime: str, seq: int) -> EngineMemory:
    """Engine file size, and on a GPU the memory an engine takes once loaded (where its runtime measures it)."""
    engine: dict[str, Any] = {"model": model, "precision": precision, "runtime": runtime, **ctx.stamp()}
    path = engine_file(ctx.repository, model, precision, runtime) if ctx.repository else None
    if ctx.repository is None or path is None:
        return EngineMemory(**engine, status="error", error=f"no engine file for {EngineMemory.key_for(model, precision, runtime)}")
    memory: float | None = None
    memory_error: str | None = None
    if ctx.device["gpu"] is not None:
        try:
            names = engine_input_names(ctx.repository, model, precision, runtime)
            inputs = batch_arrays(find_tokenizer(ctx.repository, model, ctx.tokenizer), names, 1, seq)
            memory = get_runtime(runtime).memory_mib(path, inputs, "cuda")
        except Exception as error:  # memory is optional; the size stays
            memory_error = f"{type(error).__name__}: {error}"[:500]
    return EngineMemory(
        **engine, status="ok", engine=str(path), file_size_mib=file_size_mib(path), gpu_memory_mib=memory, gpu_memory_error=memory_error
    )


def _present(repository: Path | None, configs: Iterable[SweepConfig]) -> tuple[list[SweepConfig], set[str]]:
    """Configurations whose Triton model exists in the repository, and the missing model names."""
    if repository is None:
        return list(configs), set()
    kept, missing = [], set()
    for config in configs:
        if (repository / config.triton_model).is_dir():
            kept.append(config)
        else:
            missing.add(config.triton_model)
    return kept, missing


def run_sweep(
    sweep: Sweep,
    url: str = "localhost:8001",
    repository: Path | None = Path("model_repository"),
    out: Path = Path("results"),
    tokenizer: Path | None = None,
    cpu_baseline: bool = True,
    retry_errors: bool = False,
    progress: bool = True,
    runner: Runner = run_perf_analyzer,
    metrics_url: str | None = None,
    server_statistics: bool = True,
) -> Path:
    """Run (or resume) ``sweep`` against the server at ``url``; return ``out/<device>/``.

    Configurations whose Triton model is not in ``repository`` are left out (logged); pass
    ``repository=None`` to keep them all. On a GPU machine perf_analyzer also collects the server's
    GPU metrics from ``metrics_url`` (its default: localhost:8002/metrics). Finished configurations are skipped unless they ended in
    an error and ``retry_errors`` is set. With ``server_statistics`` each record gets ``hops``: every model's
    server time per request during its run, from Triton's statistics API (``perf.server_stats``).
    """
    device = device_info()
    ctx = SweepContext(
        out_dir=Path(out) / device["name"],
        run_id=uuid.uuid4().hex[:12],
        device=device,
        manifest_hash=manifest_hash(repository),
        url=url,
        repository=repository,
        tokenizer=tokenizer,
        metrics_url=metrics_url,
        statistics=StatisticsReader(url) if server_statistics else None,
    )
    rf.append_record(ctx.out_dir / rf.ENVIRONMENT_FILE, _environment(ctx, sweep))
    configs, missing = _present(repository, sweep.configs())
    if missing:
        log.warning("left out %d Triton models absent from %s: %s", len(missing), repository, ", ".join(sorted(missing)))
    _measure_configs(ctx, sweep, configs, runner, retry_errors, progress)
    _measure_engines(ctx, sweep, configs, retry_errors)
    if cpu_baseline:
        _measure_baselines(ctx, sweep, configs, retry_errors, progress)
    rf.write_records(ctx.out_dir / rf.DERIVED_FILE, derive(ctx.out_dir))
    return ctx.out_dir


def _environment(ctx: SweepContext, sweep: Sweep) -> SweepEnvironment:
    """What this run runs on and with: the sweep, the machine, packages, code, perf_analyzer, server, repository."""
    return SweepEnvironment(
        **ctx.stamp(),
        sweep=asdict(sweep),
        device_info=ctx.device,
        packages=package_versions(),
        code=code_version(),
        perf_analyzer=perf_analyzer_version(),
        url=ctx.url,
        repository=str(ctx.repository) if ctx.repository else None,
    )


def _done_keys(path: Path, kind: type[Measured], retry_errors: bool) -> set[str]:
    """Keys whose latest record needs no new run: every one, or with ``retry_errors`` those that succeeded."""
    latest = rf.latest_by_key(rf.read_records(path, kind))
    return {key for key, record in latest.items() if record.ok or not retry_errors}


def _measure_configs(
    ctx: SweepContext, sweep: Sweep, configs: list[SweepConfig], runner: Runner, retry_errors: bool, progress: bool
) -> None:
    """perf_analyzer on every configuration not yet done, each record appended as it finishes."""
    from tqdm import tqdm

    finished = _done_keys(ctx.out_dir / rf.PERF_FILE, PerfPoint, retry_errors)
    todo = [c for c in configs if c.key not in finished]
    log.info("sweep %s: %d configurations, %d already done, %d to run", sweep.name, len(configs), len(configs) - len(todo), len(todo))
    for config in tqdm(todo, desc=f"sweep {sweep.name}", unit="config", disable=not progress):
        rf.append_record(ctx.out_dir / rf.PERF_FILE, measure(ctx, sweep, config, runner))


def _measure_engines(ctx: SweepContext, sweep: Sweep, configs: list[SweepConfig], retry_errors: bool) -> None:
    """Size and memory of every engine the configurations use, where not yet measured."""
    done = _done_keys(ctx.out_dir / rf.ENGINES_FILE, EngineMemory, retry_errors)
    for model, precision, runtime in sorted({(c.model, c.precision, c.runtime) for c in configs}):
        if EngineMemory.key_for(model, precision, runtime) not in done:
            rf.append_record(ctx.out_dir / rf.ENGINES_FILE, measure_engine(ctx, model, precision, runtime, min(sweep.seq_lens)))


def _measure_baselines(ctx: SweepContext, sweep: Sweep, configs: list[SweepConfig], retry_errors: bool, progress: bool) -> None:
    """The CPU FP32 baseline at every (model, batch, length) of the configurations, where not yet measured."""
    from tqdm import tqdm

    done = _done_keys(ctx.out_dir / rf.BASELINE_FILE, CpuBaseline, retry_errors)
    points = sorted({(c.model, c.batch_size, c.seq_len) for c in configs})
    todo = [p for p in points if CpuBaseline.key_for(*p) not in done]
    for model, batch, seq in tqdm(todo, desc="cpu fp32 baseline", unit="point", disable=not progress):
        rf.append_record(ctx.out_dir / rf.BASELINE_FILE, measure_cpu_baseline(ctx, sweep, model, batch, seq))


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator in (None, 0):
        return None
    return numerator / denominator


def _reduction(size: float | None, fp32_size: float | None) -> float | None:
    ratio = _ratio(size, fp32_size)
    return None if ratio is None else 1.0 - ratio


def _latest_ok(path: Path, kind: type[Measured]) -> list[Measured]:
    """The latest record of each key, where that one succeeded (a later failure hides an earlier success)."""
    return [record for record in rf.latest_by_key(rf.read_records(path, kind)).values() if record.ok]


def derive(out_dir: Path) -> list[DerivedRow]:
    """Speedups and memory reductions from one device folder's latest records.

    ``speedup_vs_cpu`` = CPU FP32 baseline median / Triton p50 latency at the same model, batch and
    length; ``speedup_vs_fp32`` = FP32 p50 / this p50 at the same point otherwise;
    ``memory_reduction_*`` = 1 - this engine's size (or GPU memory) / the FP32 engine's. Each row
    says whether both sides come from the same sweep run (``same_run``).
    """
    perf = _latest_ok(out_dir / rf.PERF_FILE, PerfPoint)
    baselines = {(r.model, r.batch_size, r.seq_len): r for r in _latest_ok(out_dir / rf.BASELINE_FILE, CpuBaseline)}
    engines = {(r.model, r.precision, r.runtime): r for r in _latest_ok(out_dir / rf.ENGINES_FILE, EngineMemory)}
    by_point = {r.config: r for r in perf}
    fp32 = Precision.FP32.value
    return [
        _derived_row(
            record,
            by_point.get(replace(record.config, precision=fp32)),
            baselines.get((record.model, record.batch_size, record.seq_len)),
            engines.get((record.model, record.precision, record.runtime)),
            engines.get((record.model, fp32, record.runtime)),
        )
        for record in perf
    ]


def _derived_row(
    record: PerfPoint, fp32: PerfPoint | None, base: CpuBaseline | None, engine: EngineMemory | None, fp32_engine: EngineMemory | None
) -> DerivedRow:
    """One perf point against the FP32 point, the CPU baseline and the FP32 engine of the same folder."""
    p50 = record.metric("latency_p50")
    base_ms = base.median_ms if base else None
    size, memory = (engine.file_size_mib, engine.gpu_memory_mib) if engine else (None, None)
    fp32_size, fp32_memory = (fp32_engine.file_size_mib, fp32_engine.gpu_memory_mib) if fp32_engine else (None, None)
    return DerivedRow(
        **asdict(record.config),
        latency_p50_ms=p50,
        throughput=record.metric("throughput"),
        cpu_baseline_ms=base_ms,
        speedup_vs_cpu=_ratio(base_ms, p50),
        speedup_vs_fp32=_ratio(fp32.metric("latency_p50") if fp32 else None, p50),
        throughput_vs_fp32=_ratio(record.metric("throughput"), fp32.metric("throughput") if fp32 else None),
        file_size_mib=size,
        gpu_memory_mib=memory,
        same_run=all(other is None or other.run_id == record.run_id for other in (fp32, base)),
        memory_reduction_file_size=_reduction(size, fp32_size),
        memory_reduction_gpu_memory=_reduction(memory, fp32_memory),
    )


def _statuses(path: Path, kind: type[Measured]) -> list[str]:
    return [record.status for record in rf.latest_by_key(rf.read_records(path, kind)).values()]


def summary(out_dir: Path) -> dict[str, int]:
    """Counts of ok and error records per results file (for the CLI's last line)."""
    counts: dict[str, int] = {}
    for file, statuses in (
        (rf.PERF_FILE, _statuses(out_dir / rf.PERF_FILE, PerfPoint)),
        (rf.BASELINE_FILE, _statuses(out_dir / rf.BASELINE_FILE, CpuBaseline)),
        (rf.ENGINES_FILE, _statuses(out_dir / rf.ENGINES_FILE, EngineMemory)),
    ):
        for status in statuses:
            name = f"{file.split('.')[0]}_{status}"
            counts[name] = counts.get(name, 0) + 1
    return counts
