"""Every kind of record perf writes under ``results/<device>/``: one frozen dataclass each, with a schema
version and one key.

``to_json()`` gives the JSON object a file holds (the fields, the ``key`` and, for grid rows, the ``kind``,
plus ``schema``); ``from_json()`` reads it back, the records written before schema versions too (their
``schema`` reads as ``UNVERSIONED``): a field such a record lacks takes its default, and a field this code
does not know is kept in ``extra`` and written back as it was read.

=========================== ==============================================================================
file                        record (written by)
=========================== ==============================================================================
``perf.jsonl``              ``PerfPoint`` (``perf.sweep.measure``)
``cpu_baseline.jsonl``      ``CpuBaseline`` (``perf.sweep.measure_cpu_baseline``)
``engines.jsonl``           ``EngineMemory`` (``perf.sweep.measure_engine``)
``derived.jsonl``           ``DerivedRow`` (``perf.sweep.derive``)
``environment.jsonl``       ``SweepEnvironment`` (``perf.sweep.run_sweep``)
``grid.jsonl``              by ``kind``: ``GridEnvironment``, ``GridEnginePoint``, ``GridCpuBaseline``,
                            ``GridTorchPoint``, ``GridMemory`` (``perf.engine_grid``)
``engine.jsonl``            ``EngineTiming`` (``perf.engine_timing.time_engines``)
``experiments_<model>.json`` ``Experiments`` (``scripts/gpu_experiments.py``); its kernel profiles as
                            ``KernelProfile`` rows
``load.jsonl``              ``LoadPoint`` (``perf.load.measure_load``) and, per sweep, ``LoadSoak``
``tune.jsonl``              ``TuneTrial`` (``perf.tune.tune``)
``families.jsonl``          ``FamilyBench`` (``scripts/family_bench.py``)
=========================== ==============================================================================

Served fidelity records are ``client.fidelity.FidelityRecord``. ``perf.results`` reads and writes files of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, TypeVar

from toolkit.errors import BadInputError
from toolkit.measurement.timing import failure
from toolkit.repository.naming import engine_model, ensemble_model

SCHEMA_VERSION = 1
UNVERSIONED = 0  # the schema of a record written before records carried one

Target = Literal["engine", "ensemble"]
R = TypeVar("R", bound="Record")
OutcomeT = TypeVar("OutcomeT", bound="Outcome")

# Field metadata saying when ``to_json`` writes a field (without it: always).
_WRITE, _SET, _OK = "write", "when set", "when ok"
WHEN_SET = {_WRITE: _SET}  # only while it is not None: the records have no such key then
WHEN_OK = {_WRITE: _OK}  # only when the record's status is ok (null included): error records have no such key


class RecordError(BadInputError):
    """A stored record cannot be read as its kind."""


@dataclass(frozen=True, kw_only=True)
class Record:
    """What every record shares: its schema version, the fields it was read with that this code does not know,
    and the JSON round trip. Subclasses define ``key``."""

    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    WRITTEN_PROPERTIES: ClassVar[tuple[str, ...]] = ("key",)  # properties written beside the fields

    @property
    def key(self) -> str:
        """The record's identity in its file: a later record of the same key replaces an earlier one."""
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        """The JSON object of this record, as its file holds it."""
        data = dict(self.extra)
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name != "extra" and self._writes(spec, value):
                data[spec.name] = value
        data.update((name, getattr(self, name)) for name in self.WRITTEN_PROPERTIES)
        return data

    def _writes(self, spec: Field[Any], value: Any) -> bool:
        rule = spec.metadata.get(_WRITE)
        if rule == _SET:
            return value is not None
        if rule == _OK:
            return getattr(self, "status", None) == "ok"
        return True

    @classmethod
    def from_fields(cls: type[R], data: Mapping[str, Any]) -> R:
        """A new record from a measurement's fields (a timing row merged in, say): those it does not name go
        to ``extra``, as ``from_json`` does, and it carries this code's schema version."""
        return cls.from_json({"schema": SCHEMA_VERSION, **data})

    @classmethod
    def from_json(cls: type[R], data: Mapping[str, Any]) -> R:
        """The record of a stored JSON object, of any schema version (see the module's docstring)."""
        names = {spec.name for spec in fields(cls)} - {"extra"}
        required = {spec.name for spec in fields(cls) if spec.default is MISSING and spec.default_factory is MISSING}
        missing = sorted(required - set(data))
        if missing:
            raise RecordError(f"a {cls.__name__} record needs {', '.join(missing)}; this one has {sorted(data)} (key {data.get('key')!r})")
        known = {name: value for name, value in data.items() if name in names}
        extra = {name: value for name, value in data.items() if name not in names and name not in cls.WRITTEN_PROPERTIES}
        return cls(**{"schema": UNVERSIONED, **known, "extra": extra})


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """How a measurement ended: status ``ok``, or ``error`` with its message."""

    status: str
    error: str | None = field(default=None, metadata=WHEN_SET)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def failed(self: OutcomeT, error: BaseException) -> OutcomeT:
        """This record ended by ``error`` (its status and message as ``toolkit.measurement.timing.failure`` has them)."""
        ended = failure(error)
        return replace(self, status=ended["status"], error=ended["error"])


@dataclass(frozen=True, kw_only=True)
class Timed(Outcome):
    """A timing's statistics (``toolkit.measurement.timing.Timing``), absent when it failed."""

    median_ms: float | None = field(default=None, metadata=WHEN_SET)
    p90_ms: float | None = field(default=None, metadata=WHEN_SET)
    mean_ms: float | None = field(default=None, metadata=WHEN_SET)
    min_ms: float | None = field(default=None, metadata=WHEN_SET)
    runs: int | None = field(default=None, metadata=WHEN_SET)
    warmup: int | None = field(default=None, metadata=WHEN_SET)


def _shape_key(model: str, name: str, batch: int, seq: int) -> str:
    """The key of an engine-only measurement at one shape, e.g. ``bert-base-uncased|fp16|b1|s128``."""
    return f"{model}|{name}|b{batch}|s{seq}"


def environment_key(run_id: str) -> str:
    """The key of a run's environment record."""
    return f"environment|{run_id}"


# -- the sweep through Triton (perf.sweep) ---------------------------------------------------------------


@dataclass(frozen=True)
class SweepConfig:
    """One measured point: a Triton model (engine or text-in ensemble) at one load."""

    model: str
    precision: str
    runtime: str
    target: Target
    batch_size: int
    seq_len: int
    concurrency: int

    @property
    def triton_model(self) -> str:
        """The Triton model perf_analyzer drives, named by ``toolkit.repository.naming``."""
        if self.target == "engine":
            return engine_model(self.model, self.precision, self.runtime)
        return ensemble_model(self.model, self.precision, self.runtime)

    @property
    def key(self) -> str:
        """Stable identity used for resuming, e.g. ``minilm_fp16_onnx|b4|s128|c1``."""
        return f"{self.triton_model}|b{self.batch_size}|s{self.seq_len}|c{self.concurrency}"

    @property
    def config(self) -> SweepConfig:
        """The point alone (of a record measured at it), hashable."""
        return SweepConfig(self.model, self.precision, self.runtime, self.target, self.batch_size, self.seq_len, self.concurrency)


@dataclass(frozen=True, kw_only=True)
class SweepStamp:
    """The provenance every record of one sweep run carries."""

    run_id: str
    device: str
    gpu: str | None
    manifest_hash: str | None
    time: str


@dataclass(frozen=True, kw_only=True)
class PerfPoint(SweepConfig, SweepStamp, Outcome, Record):
    """One perf_analyzer run through Triton (``perf.jsonl``): its CSV row (``metrics``), the arguments it ran
    with, and each model's server time per request (``hops``)."""

    argv: list[str] | None = field(default=None, metadata=WHEN_SET)
    stability_relaxed_to: float | None = field(default=None, metadata=WHEN_SET)
    metrics: dict[str, float] | None = field(default=None, metadata=WHEN_SET)
    raw_csv: str | None = field(default=None, metadata=WHEN_SET)
    hops: dict[str, dict[str, float]] | None = field(default=None, metadata=WHEN_SET)

    WRITTEN_PROPERTIES: ClassVar[tuple[str, ...]] = ("key", "triton_model")

    def metric(self, name: str) -> float | None:
        """One column of perf_analyzer's row (``latency_p50`` in ms, ``throughput`` in infer/s...)."""
        return (self.metrics or {}).get(name)


@dataclass(frozen=True, kw_only=True)
class CpuBaseline(SweepStamp, Timed, Record):
    """The FP32 ONNX engine on ONNX Runtime's CPU provider at one batch and length (``cpu_baseline.jsonl``)."""

    model: str
    batch_size: int
    seq_len: int
    engine: str | None = field(default=None, metadata=WHEN_SET)

    @staticmethod
    def key_for(model: str, batch: int, seq: int) -> str:
        """E.g. ``minilm|b1|s128``."""
        return f"{model}|b{batch}|s{seq}"

    @property
    def key(self) -> str:
        return self.key_for(self.model, self.batch_size, self.seq_len)


@dataclass(frozen=True, kw_only=True)
class EngineMemory(SweepStamp, Outcome, Record):
    """An engine's file size and, on a GPU, the memory it takes once loaded (``engines.jsonl``)."""

    model: str
    precision: str
    runtime: str
    engine: str | None = field(default=None, metadata=WHEN_SET)
    file_size_mib: float | None = field(default=None, metadata=WHEN_SET)
    gpu_memory_mib: float | None = field(default=None, metadata=WHEN_OK)
    gpu_memory_error: str | None = field(default=None, metadata=WHEN_SET)

    @staticmethod
    def key_for(model: str, precision: str, runtime: str) -> str:
        """The engine's Triton model name, e.g. ``minilm_fp16_onnx``."""
        return engine_model(model, precision, runtime)

    @property
    def key(self) -> str:
        return self.key_for(self.model, self.precision, self.runtime)


@dataclass(frozen=True, kw_only=True)
class DerivedRow(SweepConfig, Record):
    """Speedups and memory reductions of one perf point, from one device folder's records (``derived.jsonl``)."""

    latency_p50_ms: float | None
    throughput: float | None
    cpu_baseline_ms: float | None
    speedup_vs_cpu: float | None
    speedup_vs_fp32: float | None
    throughput_vs_fp32: float | None
    file_size_mib: float | None
    gpu_memory_mib: float | None
    same_run: bool
    memory_reduction_file_size: float | None
    memory_reduction_gpu_memory: float | None


@dataclass(frozen=True, kw_only=True)
class SweepEnvironment(SweepStamp, Record):
    """What one sweep run ran on and with (``environment.jsonl``); the first records lack ``code``."""

    sweep: dict[str, Any] = field(default_factory=dict)
    device_info: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    code: str | None = field(default=None, metadata=WHEN_SET)
    perf_analyzer: str | None = None
    url: str | None = None
    repository: str | None = None

    WRITTEN_PROPERTIES: ClassVar[tuple[str, ...]] = ()

    @property
    def key(self) -> str:
        return environment_key(self.run_id)


# -- the engine-only grid (perf.engine_grid) -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GridStamp:
    """The provenance every grid record carries; a record is stamped as it is appended."""

    device: str | None = None
    gpu: str | None = None
    run_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class GridEnvironment(GridStamp, Record):
    """The first record of a grid run: where and with what it ran, and its plan."""

    KIND: ClassVar[str] = "environment"
    WRITTEN_PROPERTIES: ClassVar[tuple[str, ...]] = ("key", "kind")

    device_info: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, str] = field(default_factory=dict)
    code: str | None = field(default=None, metadata=WHEN_SET)
    plan: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def key(self) -> str:
        return environment_key(str(self.run_id))


@dataclass(frozen=True, kw_only=True)
class GridMeasurement(GridStamp, Outcome, Record):
    """What every measured grid record shares: the model, the precision, the time it landed."""

    KIND: ClassVar[str]
    WRITTEN_PROPERTIES: ClassVar[tuple[str, ...]] = ("key", "kind")

    model: str
    precision: str
    time: str | None = None

    @property
    def kind(self) -> str:
        return self.KIND


@dataclass(frozen=True, kw_only=True)
class GridEnginePoint(Timed, GridMeasurement):
    """One precision's engine at one shape, timed by its runtime, and its first output against FP32's."""

    KIND: ClassVar[str] = "engine"

    batch_size: int
    seq_len: int
    cuda_graph: bool = False
    cosine_min: float | None = field(default=None, metadata=WHEN_SET)
    cosine_mean: float | None = field(default=None, metadata=WHEN_SET)
    max_abs: float | None = field(default=None, metadata=WHEN_SET)
    mean_abs: float | None = field(default=None, metadata=WHEN_SET)
    max_rel: float | None = field(default=None, metadata=WHEN_SET)
    nan_count: int | None = field(default=None, metadata=WHEN_SET)
    inf_count: int | None = field(default=None, metadata=WHEN_SET)
    rows_compared: int | None = field(default=None, metadata=WHEN_SET)
    rows_total: int | None = field(default=None, metadata=WHEN_SET)

    @staticmethod
    def key_for(model: str, precision: str, batch: int, seq: int) -> str:
        """E.g. ``bert-base-uncased|fp16|b1|s128``."""
        return _shape_key(model, precision, batch, seq)

    @property
    def key(self) -> str:
        return self.key_for(self.model, self.precision, self.batch_size, self.seq_len)


@dataclass(frozen=True, kw_only=True)
class GridCpuBaseline(Timed, GridMeasurement):
    """The FP32 graph on the CPU execution provider at one shape."""

    KIND: ClassVar[str] = "cpu_baseline"

    batch_size: int
    seq_len: int

    @property
    def key(self) -> str:
        return _shape_key(self.model, "cpu_fp32", self.batch_size, self.seq_len)


@dataclass(frozen=True, kw_only=True)
class GridTorchPoint(Timed, GridMeasurement):
    """PyTorch eager at one shape and precision."""

    KIND: ClassVar[str] = "torch"

    batch_size: int
    seq_len: int

    @property
    def key(self) -> str:
        return _shape_key(self.model, f"torch_eager_{self.precision}", self.batch_size, self.seq_len)


@dataclass(frozen=True, kw_only=True)
class GridMemory(GridMeasurement):
    """The GPU memory one precision's engine takes at the grid's largest shape, and its file size."""

    KIND: ClassVar[str] = "memory"

    batch_size: int
    seq_len: int
    file_mib: float
    gpu_memory_mib: float | None = field(default=None, metadata=WHEN_OK)

    @property
    def key(self) -> str:
        return f"{self.model}|{self.precision}|memory"


GridRecord = GridEnvironment | GridEnginePoint | GridCpuBaseline | GridTorchPoint | GridMemory
GRID_KINDS: dict[str, type[GridRecord]] = {
    kind.KIND: kind for kind in (GridEnvironment, GridEnginePoint, GridCpuBaseline, GridTorchPoint, GridMemory)
}


def grid_record(data: Mapping[str, Any]) -> GridRecord | None:
    """The typed record of one ``grid.jsonl`` row by its ``kind``; None for a kind this code does not know."""
    kind = GRID_KINDS.get(str(data.get("kind")))
    return None if kind is None else kind.from_json(data)


# -- engine-only timings of one shape (perf.engine_timing) -----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class EngineTiming(Timed, Record):
    """One runner (an engine on a device, the CPU baseline, PyTorch eager) at one shape (``engine.jsonl``)."""

    model: str
    runner: str
    precision: str
    batch_size: int
    seq_len: int
    device: str
    gpu: str | None
    time: str
    cuda_graph: bool | None = field(default=None, metadata=WHEN_SET)

    @property
    def key(self) -> str:
        return _shape_key(self.model, self.runner, self.batch_size, self.seq_len)


# -- GPU experiments (scripts/gpu_experiments.py) --------------------------------------------------------

KERNEL_MODES = ("graph_replay", "no_graph")


@dataclass(frozen=True)
class KernelProfile:
    """The kernels of one FP16 run of one model at one shape, replaying its CUDA graph or not (µs per run)."""

    model: str | None
    code: str | None
    shape: str
    mode: str
    wall_median_us: float
    kernels_per_run: float | None = None
    kernel_busy_us: float | None = None
    between_kernels_us: float | None = None
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_profile(cls, model: str | None, code: str | None, shape: str, mode: str, profiled: Mapping[str, Any]) -> KernelProfile:
        """The row of one mode's entry in a ``kernel_profile`` result."""
        return cls(
            model,
            code,
            shape,
            mode,
            profiled["wall_median_us"],
            profiled.get("kernels_per_run"),
            profiled.get("kernel_busy_us"),
            profiled.get("between_kernels_us"),
            profiled.get("by_kind") or {},
        )

    def us_by_kind(self) -> dict[str, float]:
        """µs per run of each kernel kind."""
        return {kind: float(entry.get("us_per_run", 0.0)) for kind, entry in self.by_kind.items()}


@dataclass(frozen=True, kw_only=True)
class Experiments(Record):
    """One ``experiments_<model>.json``: each experiment's result by name, beside the model, device and code."""

    model: str
    device_info: dict[str, Any] = field(default_factory=dict)
    code: str | None = None
    results: dict[str, Any] = field(default_factory=dict)

    WRITTEN_PROPERTIES: ClassVar[tuple[str, ...]] = ()

    @property
    def key(self) -> str:
        """The model: ``<device>/experiments_<key>.json`` holds its latest experiments."""
        return self.model

    @property
    def file_name(self) -> str:
        return f"experiments_{self.key}.json"

    def to_json(self) -> dict[str, Any]:
        """The results sit beside the model, device and code, one key per experiment."""
        data = super().to_json()
        results = data.pop("results")
        return {**data, **results}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Experiments:
        own = {spec.name for spec in fields(cls)} - {"extra", "results"}
        stored = {name: value for name, value in data.items() if name in own}
        return super().from_json({**stored, "results": {name: value for name, value in data.items() if name not in own}})

    def kernel_profiles(self) -> list[KernelProfile]:
        """One row per (shape, mode) of the ``kernel_profile`` experiment; the first files profiled one shape,
        with its ``shape`` beside the modes. [] when it did not run or failed."""
        profile = self.results.get("kernel_profile")
        if not isinstance(profile, dict) or "status" in profile:
            return []
        if "shape" in profile:
            batch, seq = profile["shape"]
            shapes = {f"b{batch}_s{seq}": profile}
        else:
            shapes = {name: value for name, value in profile.items() if isinstance(value, dict)}
        return [
            KernelProfile.from_profile(self.model, self.code, shape, mode, modes[mode])
            for shape, modes in shapes.items()
            for mode in KERNEL_MODES
            if isinstance(modes.get(mode), dict)
        ]


@dataclass(frozen=True, kw_only=True)
class LoadStamp:
    """What every record of one load sweep (or tuning run) shares."""

    run_id: str
    device: str
    gpu: str | None = None
    code: str | None = None
    manifest_hash: str | None = field(default=None, metadata=WHEN_SET)


@dataclass(frozen=True, kw_only=True)
class LoadPoint(LoadStamp, Outcome, Record):
    """One load level against one served model (``load.jsonl``): perf_analyzer's row, requests/s, whether the window
    was stable, each model's server statistics and the rows per execution it formed, failed requests, the server's
    memory before and after, each GPU's utilisation and memory while it ran, the Python steps' own phase times
    (``perf.server_stats.step_times``) and the CPU seconds of the server's processes and of perf_analyzer
    (``perf.processes.CpuMeter``)."""

    model: str
    precision: str
    path: str
    triton_model: str
    texts: int
    concurrency: int
    seq_len: int
    gpus: list[int] = field(default_factory=list)
    argv: list[str] | None = field(default=None, metadata=WHEN_SET)
    metrics: dict[str, float] | None = field(default=None, metadata=WHEN_SET)
    raw_csv: str | None = field(default=None, metadata=WHEN_SET)
    requests_per_s: float | None = field(default=None, metadata=WHEN_SET)
    stable: bool | None = field(default=None, metadata=WHEN_SET)
    stability_relaxed_to: float | None = field(default=None, metadata=WHEN_SET)
    connect_retries: int | None = field(default=None, metadata=WHEN_SET)  # perf_analyzer run again: clients failed to connect
    hops: dict[str, dict[str, float]] | None = field(default=None, metadata=WHEN_SET)
    batches: dict[str, float] | None = field(default=None, metadata=WHEN_SET)
    failures: int = 0
    gpu_samples: dict[str, dict[str, float]] | None = field(default=None, metadata=WHEN_SET)
    server_rss_mib_before: float | None = None
    server_rss_mib_after: float | None = None
    steps: dict[str, dict[str, float]] | None = field(default=None, metadata=WHEN_SET)  # Python steps' phase times
    cpu: dict[str, Any] | None = field(default=None, metadata=WHEN_SET)  # CPU seconds per process group, wall, cores

    @staticmethod
    def key_for(triton_model: str, gpus: int, texts: int, seq: int, concurrency: int) -> str:
        """``minilm_fp16|g1|t1|s128|c64``: the model, the GPUs its engines are on, texts, length and clients."""
        return f"{triton_model}|g{gpus}|t{texts}|s{seq}|c{concurrency}"

    @property
    def key(self) -> str:
        return self.key_for(self.triton_model, len(self.gpus), self.texts, self.seq_len, self.concurrency)

    def metric(self, name: str) -> float | None:
        return (self.metrics or {}).get(name)

    def requests(self) -> float:
        """Requests the server counted for the driven model during the level (Triton's statistics)."""
        hop = (self.hops or {}).get(self.triton_model)
        return float(hop["requests"]) if hop else 0.0


@dataclass(frozen=True, kw_only=True)
class LoadSoak(LoadStamp, Record):
    """One load sweep as a soak (``load.jsonl``, ``kind: soak``): requests answered and failed, unstable levels, the
    server's memory after the first level and at the end, per model under steady load (``steady``: after the model's
    first level and after its last, and the requests between, ``perf.load.steady_memory``), and the probe of clients
    that gave up mid-request."""

    levels: int
    errors: int
    unstable: int
    requests: int
    failures: int
    rss_mib_first: float | None = None
    rss_mib_last: float | None = None
    rss_growth: float | None = None
    steady: list[dict[str, Any]] | None = field(default=None, metadata=WHEN_SET)
    disconnect: dict[str, Any] | None = field(default=None, metadata=WHEN_SET)

    WRITTEN_PROPERTIES: ClassVar[tuple[str, ...]] = ("key", "kind")
    kind: ClassVar[str] = "soak"

    @property
    def key(self) -> str:
        return f"soak|{self.run_id}"


@dataclass(frozen=True, kw_only=True)
class TuneTrial(LoadStamp, Record):
    """One serving configuration tried by ``python -m perf tune`` (``tune.jsonl``): its flags, its levels (its first
    measurement) and its score (the best requests/s among levels whose p99 kept the budget; the mean over
    ``round_scores`` when it was measured again), and whether it was the search's best."""

    model: str
    precision: str
    p99_budget_ms: float
    candidate: dict[str, Any]
    flags: str
    score: float
    levels: list[dict[str, Any]]
    best: bool
    # Each measurement's score when the search measured this configuration again (its `score` is their mean).
    round_scores: list[float] | None = field(default=None, metadata=WHEN_SET)

    @property
    def key(self) -> str:
        return f"{self.model}|{self.precision}|{self.flags}|{self.run_id}"


@dataclass(frozen=True, kw_only=True)
class FamilyBench(Outcome, Record):
    """One family's FP16 engine against PyTorch eager and torch.compile FP16 at a few shapes (``families.jsonl``);
    each runner's rows by shape (``b1_s128``: a timing row), and the ops ONNX Runtime fused."""

    model: str
    run_id: str
    device: str
    gpu: str | None = None
    code: str | None = None
    family: str | None = None
    parameters: int | None = None
    fused_ops: dict[str, int] | None = None
    engine_fp16: dict[str, dict[str, Any]] = field(default_factory=dict)
    torch_eager_fp16: dict[str, dict[str, Any]] = field(default_factory=dict)
    torch_compile_fp16: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.model}|{self.run_id}"

    def median(self, runner: str, shape: str) -> float | None:
        row = getattr(self, runner).get(shape) or {}
        return row.get("median_ms") if row.get("status") == "ok" else None
