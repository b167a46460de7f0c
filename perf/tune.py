"""Serving-config search for one model and precision, on the real server: ``python -m perf tune``.

Triton Model Analyzer searches one model at a time and handles ensembles poorly; this tunes the text ensemble
(and the one-hop model, where built) as a whole. The server runs in explicit model control; each candidate is
written into the repository's configs (protobuf messages, validated) and the changed models are reloaded, then
perf_analyzer measures it at the sweep's concurrency levels (``perf.load``). A candidate's score is its highest
throughput among the levels whose p99 stays under the budget. The search is coordinate descent over the knobs
(instances of the tokenizer and of the engine, the dynamic batcher's queue delay, the tokenizer's threads, the
engine's batch buckets, the dynamic batcher itself, the serving path): each knob's
values are tried with the best of the others. The best configuration stays in the repository with ``apply`` (and
in the manifest, with the build flags that reproduce it); otherwise the configs are put back as they were.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.load import LoadContext, LoadPlan, LoadTarget, measure_load
from perf.records import LoadPoint, TuneTrial
from perf.server_stats import StatisticsReader, StepMetricsReader
from toolkit.environment import code_version, device_info
from toolkit.errors import BadInputError
from toolkit.repository.configs import config_from_text, config_text
from toolkit.repository.install import MANIFEST
from toolkit.repository.layout import validate_repository
from toolkit.repository.naming import engine_model, onehop_model, tokenizer_model
from toolkit.runtimes import DEFAULT_RUNTIME

TUNE_FILE = "tune.jsonl"
Measure = Callable[["Candidate"], list[LoadPoint]]


@dataclass(frozen=True)
class Candidate:
    """One serving configuration of a model and precision."""

    path: str = "ensemble"  # "ensemble" or "onehop"
    tokenizer_instances: int = 1
    engine_instances: int = 1
    max_queue_delay_us: int = 0
    tokenizer_threads: int = 0  # 0: every core
    batch_buckets: str = "pow2"  # engine batches padded to buckets (CUDA graphs): pow2, a step such as 8, or off
    dynamic_batching: bool = True  # off: a lone request skips the batcher's thread hand-off (no server-side batching)

    def flags(self) -> str:
        """The build_engines.py flags that write this configuration (the defaults of the last three left out; no
        queue delay without the batcher)."""
        one_hop = " --one-hop" if self.path == "onehop" else ""
        threads = f" --tokenizer-threads {self.tokenizer_threads}" if self.tokenizer_threads else ""
        buckets = "" if self.batch_buckets == "pow2" else f" --batch-buckets {self.batch_buckets}"
        batching = f" --max-queue-delay-us {self.max_queue_delay_us}" if self.dynamic_batching else " --no-dynamic-batching"
        return (
            f"--tokenizer-instances {self.tokenizer_instances} --engine-instances {self.engine_instances}"
            f"{batching}{threads}{buckets}{one_hop}"
        )


@dataclass(frozen=True)
class Space:
    """The values each knob (each :class:`Candidate` field) may take."""

    path: tuple[str, ...] = ("ensemble", "onehop")
    tokenizer_instances: tuple[int, ...] = (1, 2, 4, 8)
    engine_instances: tuple[int, ...] = (1, 2, 4)
    max_queue_delay_us: tuple[int, ...] = (0, 200, 1000)
    tokenizer_threads: tuple[int, ...] = (0,)
    batch_buckets: tuple[str, ...] = ("pow2",)
    dynamic_batching: tuple[bool, ...] = (True,)

    def __post_init__(self) -> None:
        if False in self.dynamic_batching and any(self.max_queue_delay_us):
            raise BadInputError("a queue delay needs the dynamic batcher: search --dynamic-batching off with --max-queue-delay-us 0")

    def knobs(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The knobs with more than one value: the search tries each."""
        return [(name, values) for name, values in asdict(self).items() if len(values) > 1]

    def fixed(self) -> dict[str, Any]:
        """The knobs given one value: every candidate takes it (``--paths onehop`` measures only the one-hop model)."""
        return {name: values[0] for name, values in asdict(self).items() if len(values) == 1}


@dataclass
class Trial:
    """A candidate's levels and score; ``repeats``: the same candidate measured again (``search``'s ``confirm``)."""

    candidate: Candidate
    levels: list[LoadPoint] = field(default_factory=list)
    repeats: list[list[LoadPoint]] = field(default_factory=list)

    def round_scores(self, p99_ms: float) -> list[float]:
        """Per measurement: the best throughput among its levels under the budget (0 when none is)."""
        return [_best_within(levels, p99_ms) for levels in (self.levels, *self.repeats)]

    def score(self, p99_ms: float) -> float:
        """The mean of ``round_scores``: one measurement alone when the candidate was not measured again."""
        scores = self.round_scores(p99_ms)
        return sum(scores) / len(scores)


def _best_within(levels: list[LoadPoint], p99_ms: float) -> float:
    kept = [lv for lv in levels if lv.ok and (lv.metric("latency_p99") or math.inf) <= p99_ms and not lv.failures]
    return max((lv.requests_per_s or 0.0 for lv in kept), default=0.0)


def search(
    start: Candidate, space: Space, measure: Measure, p99_ms: float, log: Callable[[str], None] = print, confirm: int = 0
) -> tuple[Trial, list[Trial]]:
    """Coordinate descent from ``start``: each knob in turn takes the value that scores best with the others held.
    Then the two best candidates are measured ``confirm`` more times and the best mean wins: one measurement of a
    served configuration varies by about 5% (the same one-hop configuration twice on the H200: 6,780 and 7,113
    requests/s), enough to crown a lucky window. Returns the best trial and every trial made.

    A one-hop candidate serves without the tokenizer model, so its tokenizer instance count is held at the start's:
    candidates that differ only there are one configuration, measured once."""
    trials: dict[Candidate, Trial] = {}

    def served(candidate: Candidate) -> Candidate:
        return replace(candidate, tokenizer_instances=start.tokenizer_instances) if candidate.path == "onehop" else candidate

    def trial(candidate: Candidate) -> Trial:
        candidate = served(candidate)
        if candidate not in trials:
            trials[candidate] = Trial(candidate, measure(candidate))
            log(f"{candidate.flags()}: {trials[candidate].score(p99_ms):.0f} requests/s within p99 {p99_ms:g} ms")
        return trials[candidate]

    best = trial(replace(start, **space.fixed()))
    for name, values in space.knobs():
        for value in values:
            current = trial(replace(best.candidate, **{name: value}))
            if current.score(p99_ms) > best.score(p99_ms):
                best = current
    return _confirmed(list(trials.values()), measure, p99_ms, confirm, log), list(trials.values())


def _confirmed(trials: list[Trial], measure: Measure, p99_ms: float, confirm: int, log: Callable[[str], None]) -> Trial:
    """The best trial after measuring the two best ``confirm`` more times each (rounds alternate between them)."""
    ranked = sorted(trials, key=lambda t: -t.score(p99_ms))
    finalists = [t for t in ranked[:2] if t.score(p99_ms) > 0] if confirm > 0 else []
    for _ in range(confirm if len(finalists) > 1 else 0):
        for finalist in finalists:
            finalist.repeats.append(measure(finalist.candidate))
    for finalist in finalists if len(finalists) > 1 else []:
        rounds = ", ".join(f"{score:.0f}" for score in finalist.round_scores(p99_ms))
        log(f"{finalist.candidate.flags()}: measured again: {rounds} requests/s (mean {finalist.score(p99_ms):.0f})")
    return max(finalists if len(finalists) > 1 else trials, key=lambda t: t.score(p99_ms))


class RepositoryConfigs:
    """The configs one model's candidates change, edited as protobuf messages; ``restore`` puts the originals back."""

    def __init__(self, repository: Path, model: str, precision: str, runtime: str = DEFAULT_RUNTIME) -> None:
        self.repository = repository
        self.tokenizer = tokenizer_model(model)
        self.engine = engine_model(model, precision, runtime)
        self.onehop = onehop_model(model, precision)
        self.names = [n for n in (self.tokenizer, self.engine, self.onehop) if (repository / n / "config.pbtxt").is_file()]
        self.original = {name: self._path(name).read_text() for name in self.names}

    def _path(self, name: str) -> Path:
        return self.repository / name / "config.pbtxt"

    def write(self, candidate: Candidate) -> list[str]:
        """Write ``candidate`` into the configs; returns the models whose config changed."""
        changed = []
        for name in self.names:
            config = config_from_text(self.original[name])
            instances = candidate.tokenizer_instances if name == self.tokenizer else candidate.engine_instances
            for group in config.instance_group:
                group.count = instances
            if candidate.dynamic_batching:
                config.dynamic_batching.max_queue_delay_microseconds = candidate.max_queue_delay_us  # made when absent
            else:
                config.ClearField("dynamic_batching")
            _set_parameters(config, name, self, candidate)
            text = config_text(config)
            if text != self._path(name).read_text():
                self._path(name).write_text(text)
                changed.append(name)
        validate_repository(self.repository)
        return changed

    def restore(self) -> None:
        for name, text in self.original.items():
            self._path(name).write_text(text)


def _set_parameters(config: Any, name: str, configs: RepositoryConfigs, candidate: Candidate) -> None:
    """The candidate's tokenizer threads (tokenizer and one-hop models) and batch buckets (models that replay CUDA
    graphs) into ``config``'s parameters."""
    parameters = config.parameters
    if name in (configs.tokenizer, configs.onehop):
        if candidate.tokenizer_threads:
            parameters["tokenizer_threads"].string_value = str(candidate.tokenizer_threads)
        elif "tokenizer_threads" in parameters:
            del parameters["tokenizer_threads"]
    if name in (configs.engine, configs.onehop) and parameters.get("enable_cuda_graph") and parameters["enable_cuda_graph"].string_value == "1":
        parameters["cuda_graph_batch_buckets"].string_value = candidate.batch_buckets


def start_candidate(configs: RepositoryConfigs) -> Candidate:
    """The configuration the repository holds now."""
    tokenizer = config_from_text(configs.original[configs.tokenizer])
    engine = config_from_text(configs.original[configs.engine])
    return Candidate(
        tokenizer_instances=sum(g.count for g in tokenizer.instance_group) or 1,
        engine_instances=max((g.count for g in engine.instance_group), default=1),
        max_queue_delay_us=int(engine.dynamic_batching.max_queue_delay_microseconds) if engine.HasField("dynamic_batching") else 0,
        tokenizer_threads=int(tokenizer.parameters["tokenizer_threads"].string_value) if "tokenizer_threads" in tokenizer.parameters else 0,
        batch_buckets=_batch_buckets(engine),
        dynamic_batching=engine.HasField("dynamic_batching"),
    )


def _batch_buckets(engine: Any) -> str:
    """The engine config's batch buckets in ``--batch-buckets`` spelling: ``off`` where it replays CUDA graphs without
    them, ``pow2`` (the default, which changes nothing) where it replays none."""
    from toolkit.runtimes.ort_device import bucket_spelling

    parameters = engine.parameters
    if "cuda_graph_batch_buckets" in parameters:
        return bucket_spelling(parameters["cuda_graph_batch_buckets"].string_value)
    graphs = "enable_cuda_graph" in parameters and parameters["enable_cuda_graph"].string_value == "1"
    return "off" if graphs else "pow2"


@dataclass
class Tuner:
    """Applies candidates to a running explicit-mode server and measures them with the load sweep's levels."""

    plan: LoadPlan
    configs: RepositoryConfigs
    context: LoadContext
    client: Any
    model: str
    precision: str

    def measure(self, candidate: Candidate) -> list[LoadPoint]:
        for name in self.configs.write(candidate):
            self.client.load_model(name)  # explicit model control: reload with the config now on disk
        triton_model = self.plan.triton_model(self.model, self.precision, candidate.path)
        levels = []
        for concurrency in self.plan.concurrencies:
            target = LoadTarget(self.model, self.precision, candidate.path, triton_model, self.plan.texts_per_request[0], concurrency)
            levels.append(measure_load(self.context, self.plan, target))
        return levels


def tune(
    repository: Path,
    model: str,
    precision: str,
    p99_ms: float,
    url: str,
    plan: LoadPlan,
    space: Space,
    out: Path,
    apply: bool = False,
    log: Callable[[str], None] = print,
    confirm: int = 0,
    server_pid: int | None = None,
    metrics_url: str | None = None,
) -> tuple[Trial, list[Trial], Path]:
    """Search ``space`` for ``model``/``precision`` on the explicit-mode server at ``url``; record every trial in
    ``<out>/<device>/tune.jsonl``; keep the best in the repository with ``apply``. Returns (best, trials, file).
    ``server_pid`` and ``metrics_url`` add each level's CPU use per process and the Python steps' phase times."""
    import tritonclient.grpc as grpcclient

    configs = RepositoryConfigs(repository, model, precision, plan.runtime)
    if configs.tokenizer not in configs.names or configs.engine not in configs.names:
        raise BadInputError(f"{model} {precision} is not built in {repository}: build it first (build_engines.py --models {model})")
    if configs.onehop not in configs.names:
        space = replace(space, path=tuple(p for p in space.path if p != "onehop") or ("ensemble",))
    device = device_info()
    path = Path(out) / device["name"] / TUNE_FILE
    stamp = {"run_id": f"{time.time():.0f}", "device": device["name"], "gpu": device["gpu"], "code": code_version()}
    context = LoadContext(
        path.parent, url, repository, server_pid, stamp, None, StatisticsReader(url), device["gpu_count"], steps=StepMetricsReader(metrics_url)
    )
    tuner = Tuner(plan, configs, context, grpcclient.InferenceServerClient(url), model, precision)
    try:
        best, trials = search(start_candidate(configs), space, tuner.measure, p99_ms, log, confirm)
    finally:
        configs.restore()
    for trial in trials:
        rf.append_record(path, TuneTrial.from_fields({
            **stamp, "model": model, "precision": precision, "p99_budget_ms": p99_ms, "candidate": asdict(trial.candidate),
            "flags": trial.candidate.flags(), "score": trial.score(p99_ms), "levels": [_level(lv) for lv in trial.levels], "best": trial is best,
            **({"round_scores": trial.round_scores(p99_ms)} if trial.repeats else {}),
        }))  # fmt: skip
    if apply:
        _apply(configs, best, p99_ms, stamp)
    return best, trials, path


def _level(level: LoadPoint) -> dict[str, Any]:
    return {
        "concurrency": level.concurrency, "texts": level.texts, "seq_len": level.seq_len, "status": level.status, "requests_per_s": level.requests_per_s, "stable": level.stable,
        "batches": level.batches, "failures": level.failures, "error": level.error, "p50_ms": level.metric("latency_p50"),
        "p99_ms": level.metric("latency_p99"),
        **({"steps": level.steps} if level.steps else {}), **({"cpu": level.cpu} if level.cpu else {}), **({"hops": level.hops} if level.hops else {}),
    }  # fmt: skip


def _apply(configs: RepositoryConfigs, best: Trial, p99_ms: float, stamp: dict[str, Any]) -> None:
    """Keep ``best`` in the repository's configs and record it, with its build flags, in the manifest."""
    configs.write(best.candidate)
    manifest_path = configs.repository / configs.tokenizer / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest["serving_tuned"] = {
        "candidate": asdict(best.candidate), "build_flags": best.candidate.flags(), "score_requests_per_s": best.score(p99_ms),
        "p99_budget_ms": p99_ms, **stamp,
    }  # fmt: skip
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str))


def rounds_note(scores: list[float]) -> str:
    """How a score measured more than once came about: " (mean of 11672, 11020)"."""
    return f" (mean of {', '.join(f'{score:.0f}' for score in scores)})"


LEVEL_CELLS = "clients: requests/s, p50/p99 ms"


def level_cell(concurrency: int, requests_per_s: float | None, p50_ms: float | None, p99_ms: float | None) -> str:
    """One measured level as the search's tables show it (``LEVEL_CELLS``): ``c128: 13218, 9.5/14.5``; a p50 the
    level did not record (searches before it was kept) is ``–``."""
    p50 = f"{p50_ms:.2f}" if p50_ms else "–"
    return f"c{concurrency}: {requests_per_s or 0:.0f}, {p50}/{p99_ms:.1f}" if p99_ms else f"c{concurrency}: –"


def trials_table(trials: list[Trial], p99_ms: float) -> str:
    """One line per trial: the flags, each level's requests/s, p50 and p99, the score."""
    lines = [f"{'configuration':<78} {'levels (' + LEVEL_CELLS + ')':<60} score"]
    for trial in sorted(trials, key=lambda t: -t.score(p99_ms)):
        levels = "; ".join(
            level_cell(lv.concurrency, lv.requests_per_s, lv.metric("latency_p50"), lv.metric("latency_p99")) if lv.ok else f"c{lv.concurrency}: error"
            for lv in trial.levels
        )
        rounds = rounds_note(trial.round_scores(p99_ms)) if trial.repeats else ""
        lines.append(f"{trial.candidate.flags():<78} {levels:<60} {trial.score(p99_ms):.0f}{rounds}")
    return "\n".join(lines)
