"""Load sweeps: many clients each sending one text (or a few), at rising concurrency, against the text ensembles
(and the one-hop models, where built), through perf_analyzer with time windows.

Each point records perf_analyzer's throughput and p50/p90/p99 (its CSV), whether it reached a stable window at
the asked stability, each model's requests, executions and server time while it ran (Triton's statistics: the
batch sizes the server actually formed), failed requests, and the resident memory of the server and its Python
stubs. The sweep doubles as a soak: the memory at the end against the memory after the first level, over every
request sent, and a probe of clients that give up mid-request. Records land in ``<out>/<device>/load.jsonl``;
the report puts throughput against p99 and the serving efficiency (served sequences/s against what the engine
alone does at the batch the server formed, from the same folder's grid) beside them.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from perf import results as rf
from perf.analyzer import PerfAnalyzerArgs, PerfAnalyzerError, run_perf_analyzer
from perf.environment import manifest_hash
from perf.inputs import perf_analyzer_data, write_perf_analyzer_data
from perf.processes import CpuMeter, server_rss_mib
from perf.records import LoadPoint, LoadSoak
from perf.server_stats import StatisticsReader, StepMetricsReader
from toolkit.environment import code_version, device_info, slug
from toolkit.errors import BadInputError, ToolkitError
from toolkit.measurement.gpu_sampler import sampled_gpus
from toolkit.names import TEXT, Precision
from toolkit.repository.lookup import find_tokenizer
from toolkit.repository.naming import engine_model, ensemble_model, onehop_model
from toolkit.runtimes import DEFAULT_RUNTIME

LOAD_FILE = "load.jsonl"
PATHS = ("ensemble", "onehop")
UNSTABLE = "Failed to obtain stable measurement"
# perf_analyzer's client threads at 128-256 clients on the H200, now and then, while the server served other levels
UNCONNECTED = ("failed to connect to all addresses", "Socket closed")
log = logging.getLogger(__name__)
Runner = Callable[[PerfAnalyzerArgs], list[dict[str, float]]]
Result = TypeVar("Result")


@dataclass(frozen=True)
class LoadPlan:
    """What one load sweep drives and how long each level is measured."""

    models: tuple[str, ...]
    precisions: tuple[str, ...] = (Precision.FP16.value,)
    paths: tuple[str, ...] = ("ensemble",)  # "ensemble" (tokenizer -> engine) and/or "onehop" (one Python model)
    texts_per_request: tuple[int, ...] = (1,)
    concurrencies: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
    seq_len: int = 128
    window_ms: int = 4000
    stability_percentage: float = 10.0  # perf_analyzer's default: a window within 10% of the last ones
    max_trials: int = 10
    runtime: str = DEFAULT_RUNTIME

    def __post_init__(self) -> None:
        for precision in self.precisions:
            Precision(precision)
        bad = sorted(set(self.paths) - set(PATHS))
        if bad:
            raise BadInputError(f"paths {bad} unknown: choose from {','.join(PATHS)} (--paths)")
        if not self.models or min((*self.texts_per_request, *self.concurrencies, self.seq_len, self.window_ms)) < 1:
            raise BadInputError("a load sweep needs models, and texts per request, concurrencies, --seq-lens and the window >= 1")

    def triton_model(self, model: str, precision: str, path: str) -> str:
        return ensemble_model(model, precision, self.runtime) if path == "ensemble" else onehop_model(model, precision)

    def points(self) -> Iterator[LoadTarget]:
        """Every (model, precision, path, texts, concurrency), lightest load first within each model."""
        for model in self.models:
            for precision in self.precisions:
                for path in self.paths:
                    for texts in self.texts_per_request:
                        for concurrency in self.concurrencies:
                            yield LoadTarget(model, precision, path, self.triton_model(model, precision, path), texts, concurrency)


@dataclass(frozen=True)
class LoadTarget:
    """One load level against one Triton model."""

    model: str
    precision: str
    path: str
    triton_model: str
    texts: int
    concurrency: int



LOADS: dict[str, LoadPlan] = {
    # The GPU's: three models, both serving paths, single texts, 1..256 clients, 4 s windows.
    "load": LoadPlan(models=("minilm", "bert-base-uncased", "gpt2"), paths=PATHS),
    # CI-sized, on the CPU: MiniLM, up to 32 clients, short windows and a looser bar (two cores shared with the server).
    "load-cpu": LoadPlan(
        models=("minilm",), precisions=("fp32",), concurrencies=(1, 4, 16, 32), seq_len=32, window_ms=1000, stability_percentage=50.0, max_trials=6
    ),
}


@dataclass
class LoadContext:
    """What every point of one sweep shares."""

    out_dir: Path
    url: str
    repository: Path
    server_pid: int | None
    stamp: dict[str, Any]
    tokenizer: Path | None = None
    statistics: StatisticsReader | None = None
    visible_gpus: int = 0
    steps: StepMetricsReader | None = None  # the Python steps' own phase timing (the metrics endpoint)
    inputs: dict[tuple[str, int], Path] = field(default_factory=dict)


def _input_file(ctx: LoadContext, model: str, seq_len: int) -> Path:
    if (model, seq_len) not in ctx.inputs:
        tokenizer = find_tokenizer(ctx.repository, model, ctx.tokenizer)
        path = ctx.out_dir / "inputs" / f"{slug(model)}_s{seq_len}_text.json"
        ctx.inputs[(model, seq_len)] = write_perf_analyzer_data(path, perf_analyzer_data(tokenizer, (TEXT,), seq_len))
    return ctx.inputs[(model, seq_len)]


def _arguments(ctx: LoadContext, plan: LoadPlan, target: LoadTarget, csv: Path) -> PerfAnalyzerArgs:
    return PerfAnalyzerArgs(
        model=target.triton_model,
        csv_path=csv,
        url=ctx.url,
        batch_size=target.texts,
        concurrency=(target.concurrency, target.concurrency),
        input_data=_input_file(ctx, target.model, plan.seq_len),
        measurement_mode="time_windows",
        measurement_interval_ms=plan.window_ms,
        stability_percentage=plan.stability_percentage,
        max_trials=plan.max_trials,
    )


def _batches(target: LoadTarget, hops: dict[str, dict[str, float]] | None) -> dict[str, float]:
    """Rows per execution the server formed, per model that executes (the ensemble itself does not)."""
    formed = {}
    for name, hop in (hops or {}).items():
        if name != target.triton_model or target.path == "onehop":
            formed[name] = round(hop["requests"] * target.texts / max(hop["executions"], 1), 2)
    return formed


def served_gpus(repository: Path, plan: LoadPlan, target: LoadTarget, visible: int) -> list[int]:
    """The GPUs the model's engine instances are placed on (its config's instance groups; every visible GPU when
    they name none); empty for CPU instances."""
    from toolkit.repository.lookup import model_config

    executing = target.triton_model if target.path == "onehop" else engine_model(target.model, target.precision, plan.runtime)
    config = model_config(repository, executing)
    groups = list(config.instance_group) if config is not None else []
    if not any(group.kind == group.KIND_GPU for group in groups):
        return []
    named = sorted({gpu for group in groups for gpu in group.gpus})
    return named or list(range(visible))


def measure_load(ctx: LoadContext, plan: LoadPlan, target: LoadTarget, runner: Runner = run_perf_analyzer) -> LoadPoint:
    """One level: perf_analyzer's numbers, the server's statistics, memory and GPUs around it (status ok or error)."""
    gpus = served_gpus(ctx.repository, plan, target, ctx.visible_gpus)
    record: dict[str, Any] = {**asdict(target), "seq_len": plan.seq_len, "gpus": gpus, **ctx.stamp}
    key = LoadPoint.key_for(target.triton_model, len(gpus), target.texts, plan.seq_len, target.concurrency)
    csv = ctx.out_dir / rf.RAW_DIR / f"load-{slug(key)}.csv"
    record["server_rss_mib_before"] = server_rss_mib(ctx.server_pid)
    try:
        args = _arguments(ctx, plan, target, csv)

        def run() -> list[dict[str, float]]:
            record["stable"] = True
            try:
                return _connected(runner, args, record)
            except PerfAnalyzerError as error:
                if UNSTABLE not in str(error):
                    raise
                relaxed = replace(args, stability_percentage=2 * args.stability_percentage)  # say so, and measure anyway
                record.update(stable=False, stability_relaxed_to=relaxed.stability_percentage)
                return _connected(runner, relaxed, record)

        with sampled_gpus() as sampler:
            rows, observed = _observed(ctx, run)
        hops = observed["hops"]
        metrics = rows[0]
        record["gpu_samples"] = sampler.summary()  # per GPU: utilisation and memory while the level ran
        record.update(status="ok", argv=args.argv(), metrics=metrics, raw_csv=str(csv.relative_to(ctx.out_dir)))
        record["requests_per_s"] = metrics.get("throughput", 0.0) / target.texts  # perf_analyzer counts rows
        record.update(hops=hops, batches=_batches(target, hops), failures=int(sum(h.get("failures", 0) for h in (hops or {}).values())))
        record.update(steps=observed["steps"], cpu=observed["cpu"])
    except (ToolkitError, OSError) as error:
        record.update(status="error", error=f"{type(error).__name__}: {error}"[:2000])
    record["server_rss_mib_after"] = server_rss_mib(ctx.server_pid)
    return LoadPoint.from_fields(record)


def _connected(runner: Runner, args: PerfAnalyzerArgs, record: dict[str, Any], retries: int = 1) -> list[dict[str, float]]:
    """``runner(args)``, run again (after 2 s) when some of perf_analyzer's client threads failed to connect or saw
    their socket closed (``UNCONNECTED``); the record counts the retries."""
    for attempt in range(retries + 1):
        try:
            return runner(args)
        except PerfAnalyzerError as error:
            if not any(marker in str(error) for marker in UNCONNECTED) or attempt == retries:
                raise
            record["connect_retries"] = attempt + 1
            log.warning("perf_analyzer on %s: clients failed to connect; measuring again", args.model)
            time.sleep(2.0)
    raise AssertionError("unreachable")


def _observed(ctx: LoadContext, run: Callable[[], Result]) -> tuple[Result, dict[str, Any]]:
    """``run()``'s result and what the server did meanwhile: each model's statistics (``hops``), the Python steps'
    phase times (``steps``) and the CPU seconds of each process group (``cpu``)."""
    observed: dict[str, Any] = {}

    def with_cpu() -> Result:
        result, observed["cpu"] = CpuMeter(ctx.server_pid).around(run)
        return result

    def with_steps() -> Result:
        result, observed["steps"] = ctx.steps.around(with_cpu) if ctx.steps else (with_cpu(), None)
        return result

    result, observed["hops"] = ctx.statistics.around(with_steps) if ctx.statistics else (with_steps(), None)
    return result, observed


def disconnect_probe(url: str, model: str, text: str, clients: int = 8) -> dict[str, Any]:
    """Clients that give up before their answer (a 1 ms deadline) leave the server serving: the server answers a
    normal request afterwards. Returns how many gave up and whether the server still answered."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    import tritonclient.grpc as grpcclient

    def impatient(_: int) -> bool:
        with grpcclient.InferenceServerClient(url) as client:
            tensor = grpcclient.InferInput(TEXT, [1, 1], "BYTES")
            tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
            try:
                client.infer(model, [tensor], client_timeout=0.001)
                return False
            except Exception:  # the deadline passed: the client went away mid-request
                return True

    with ThreadPoolExecutor(clients) as pool:
        gave_up = sum(pool.map(impatient, range(clients * 4)))
    time.sleep(0.5)
    with grpcclient.InferenceServerClient(url) as client:
        tensor = grpcclient.InferInput(TEXT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=np.object_))
        output = client.get_model_metadata(model).outputs[0].name
        answered = client.infer(model, [tensor], client_timeout=30).as_numpy(output) is not None
    return {"model": model, "clients_gave_up": gave_up, "served_after": answered}


def run_load(
    plan: LoadPlan,
    url: str,
    repository: Path,
    out: Path = Path("results"),
    server_pid: int | None = None,
    tokenizer: Path | None = None,
    progress: bool = True,
    runner: Runner = run_perf_analyzer,
    probe: bool = True,
    metrics_url: str | None = None,
) -> tuple[Path, LoadSoak]:
    """Run ``plan`` against the server at ``url``; append every point to ``<out>/<device>/load.jsonl`` and return that
    folder with the soak summary (requests sent, failures, memory growth, the disconnect probe). ``metrics_url``
    (``http://host:port/metrics``) gives the Python steps' phase times; the CPU use of the server's processes needs
    ``server_pid``."""
    from tqdm import tqdm

    device = device_info()
    out_dir = Path(out) / device["name"]
    run_id = uuid.uuid4().hex[:12]
    stamp = {"run_id": run_id, "device": device["name"], "gpu": device["gpu"], "code": code_version(), "manifest_hash": manifest_hash(repository)}
    ctx = LoadContext(
        out_dir, url, repository, server_pid, stamp, tokenizer, StatisticsReader(url), device["gpu_count"], steps=StepMetricsReader(metrics_url)
    )
    missing = sorted({t.triton_model for t in plan.points() if not (repository / t.triton_model).is_dir()})
    if missing:
        raise BadInputError(f"models {missing} are not in {repository}: build them (build_engines.py, --one-hop for onehop paths)")
    points = []
    for target in tqdm(list(plan.points()), desc="load sweep", unit="level", disable=not progress):
        point = measure_load(ctx, plan, target, runner)
        rf.append_record(out_dir / LOAD_FILE, point)
        points.append(point)
    disconnect = None
    if probe and points:
        tokenizer_file = find_tokenizer(repository, points[0].model, tokenizer)
        disconnect = disconnect_probe(url, points[0].triton_model, _probe_text(tokenizer_file))
    soak = soak_summary(points, stamp, disconnect)
    rf.append_record(out_dir / LOAD_FILE, soak)
    return out_dir, soak


def _probe_text(tokenizer: Path) -> str:
    from perf.inputs import text_samples

    return text_samples(tokenizer, 32, 1)[0]


def steady_memory(points: list[LoadPoint]) -> list[dict[str, Any]]:
    """Per served model, the server's memory after its first level (which pays the model's warm-up: the stubs' first
    GPU work and graphs) and after its last, with the requests of the levels in between and after: growth under
    steady load, the leak check. Levels are taken in the order they ran."""
    by_model: dict[str, list[LoadPoint]] = {}
    for point in points:
        if point.ok and point.server_rss_mib_after:
            by_model.setdefault(point.triton_model, []).append(point)
    steady = []
    for model, levels in by_model.items():
        first, last = levels[0].server_rss_mib_after, levels[-1].server_rss_mib_after
        requests = int(sum(level.requests() for level in levels[1:]))
        if len(levels) > 1 and first and last:
            steady.append({"model": model, "requests": requests, "rss_mib_start": first, "rss_mib_end": last, "growth": round(last / first - 1.0, 4)})
    return steady


def soak_summary(points: list[LoadPoint], stamp: dict[str, Any], disconnect: dict[str, Any] | None = None) -> LoadSoak:
    """Requests answered and failed, unstable levels, the server's memory after the first level and at the end, and
    per model under steady load (``steady_memory``)."""
    ok = [p for p in points if p.ok]
    start = next((p.server_rss_mib_after for p in ok if p.server_rss_mib_after), None)
    end = next((p.server_rss_mib_after for p in reversed(ok) if p.server_rss_mib_after), None)
    steady = steady_memory(points)
    return LoadSoak.from_fields({
        **stamp,
        "levels": len(points),
        "errors": len(points) - len(ok),
        "unstable": sum(1 for p in ok if p.stable is False),
        "requests": int(sum(p.requests() for p in ok)),
        "failures": sum(p.failures for p in ok),
        "rss_mib_first": start,
        "rss_mib_last": end,
        "rss_growth": None if not start or not end else round(end / start - 1.0, 4),
        "steady": steady or None,
        "disconnect": disconnect,
    })  # fmt: skip
