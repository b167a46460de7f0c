"""Numerical fidelity of served engines against an FP32 reference, Polygraphy-comparator style.

Per output: cosine similarity (mean, min over token vectors), absolute and relative error
(max, mean, median), NaN and Inf rates of the candidate, and top-1 agreement for logits.
Every case is measured and recorded first; :func:`check_records` then collects every mismatch
and :class:`FidelityError` reports them all at once.
"""

from __future__ import annotations

import json
import math
import platform
import socket
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.environment import device_folder, gpus, package_versions
from toolkit.errors import BadInputError, ToolkitError
from toolkit.measurement.compare import Bar, Mismatch, OutputMetrics, compare_arrays, mismatches
from toolkit.names import LOGITS, NEXT_TOKEN_LOGITS, Precision
from toolkit.repository.naming import engine_model
from toolkit.runtimes import DEFAULT_RUNTIME

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from client.api import TritonTextClient
    from client.inputs import Dataset
    from client.reference import OnnxReference

TOP1_OUTPUTS: frozenset[str] = frozenset({LOGITS, NEXT_TOKEN_LOGITS})
SCHEMA_VERSION = 1  # of FidelityRecord's JSON
# Fields written only when measured, so that records from before them read and write back unchanged.
MEASURED_ONLY = ("concurrency", "latency_ms")
UNVERSIONED = 0  # the schema of a record written before records carried one
DEFAULT_MIN_COSINE: dict[str, float] = {
    Precision.FP32.value: 0.99999,
    Precision.FP16.value: 0.999,
    Precision.HYBRID.value: 0.9998,
    Precision.AUTO.value: 0.9998,  # the search's default bar (toolkit.precision.policy_file.PolicyBar)
}


class FidelityError(ToolkitError):
    """One or more outputs broke their tolerance; ``mismatches`` holds every one of them."""

    def __init__(self, mismatches: Sequence[Mismatch]) -> None:
        self.mismatches = list(mismatches)
        shown = "; ".join(str(m) for m in self.mismatches[:20])
        more = f"; ... {len(self.mismatches) - 20} more" if len(self.mismatches) > 20 else ""
        super().__init__(f"{len(self.mismatches)} fidelity mismatch(es): {shown}{more}")


# -- records and checks ---------------------------------------------------------------------------


@dataclass
class FidelityRecord:
    """One measured case: a model variant on one kind of input at one shape.

    Its JSON (``to_json``, in the ``records`` of ``fidelity_<model>.json``) is its fields with NaN as null;
    ``from_json`` reads it back, the records written before schema versions too (``schema`` reads as
    ``UNVERSIONED``). Fields this code does not know are kept in ``extra`` and written back; the metrics of an
    output are ``OutputMetrics``' fields, those it does not know are left out.
    """

    model: str
    precision: str
    runtime: str
    batch: int
    seq: int
    inputs: str
    dataset: str
    requests: int
    outputs: dict[str, OutputMetrics] = field(default_factory=dict)
    concurrency: int | None = None
    latency_ms: float | None = None  # median round trip of the case's requests, client side, ``concurrency`` in flight
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def case(self) -> str:
        """Short name of the case for tables and mismatch messages."""
        return f"{self.model}/{self.precision}/{self.runtime} {self.inputs} b{self.batch} s{self.seq}"

    @property
    def key(self) -> str:
        """The case's identity, e.g. ``minilm|hybrid|onnxruntime|text|shipped|b8|s128``."""
        return f"{self.model}|{self.precision}|{self.runtime}|{self.inputs}|{self.dataset}|b{self.batch}|s{self.seq}"

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data (NaN becomes null)."""
        data = asdict(self)
        unmeasured = [name for name in MEASURED_ONLY if data[name] is None]
        return _json_safe({**data.pop("extra"), **{k: v for k, v in data.items() if k not in unmeasured}})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FidelityRecord:
        """The record of a stored JSON object (null metrics read as NaN, except a top-1 agreement not measured)."""
        names = {spec.name for spec in fields(cls)} - {"extra", "outputs"}
        missing = sorted(spec.name for spec in fields(cls) if spec.name in names and spec.default is MISSING and spec.name not in data)
        if missing:
            raise BadInputError(f"a fidelity record needs {', '.join(missing)}; this one has {sorted(data)}")
        outputs = {name: _output_metrics(metrics) for name, metrics in (data.get("outputs") or {}).items()}
        known = {name: value for name, value in data.items() if name in names}
        extra = {name: value for name, value in data.items() if name not in names and name != "outputs"}
        return cls(**{"schema": UNVERSIONED, **known}, outputs=outputs, extra=extra)


def _output_metrics(stored: Mapping[str, Any]) -> OutputMetrics:
    """``OutputMetrics`` from its JSON, where ``_json_safe`` wrote NaN as null."""
    names = {spec.name for spec in fields(OutputMetrics)}
    values: dict[str, Any] = {k: math.nan if v is None and k != "top1_agreement" else v for k, v in stored.items() if k in names}
    return OutputMetrics(**values)


def read_results(path: Path) -> list[FidelityRecord]:
    """The records of a fidelity file written by ``write_results``."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise BadInputError(f"{path} is not a fidelity results file (no list of records): write it with python -m client fidelity")
    return [FidelityRecord.from_json(record) for record in data["records"]]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


@dataclass(frozen=True)
class Tolerances:
    """Limits per output; ``min_cosine`` None means the precision's default in ``DEFAULT_MIN_COSINE``."""

    min_cosine: float | None = None
    max_nan_rate: float = 0.0
    max_inf_rate: float = 0.0
    min_top1: float | None = None
    max_abs: float | None = None
    cosine_on_random: bool = False

    def cosine_limit(self, precision: str) -> float:
        """The cosine floor of ``precision``."""
        return self.min_cosine if self.min_cosine is not None else DEFAULT_MIN_COSINE.get(precision, 0.999)

    def bar(self, precision: str, judge_cosine: bool = True) -> Bar:
        """The comparator's limits for one precision (no cosine floor when ``judge_cosine`` is False)."""
        return Bar(
            min_cosine=self.cosine_limit(precision) if judge_cosine else None,
            max_nan_rate=self.max_nan_rate,
            max_inf_rate=self.max_inf_rate,
            min_top1=self.min_top1,
            max_abs=self.max_abs,
        )


def check_records(records: Iterable[FidelityRecord], tolerances: Tolerances = Tolerances()) -> list[Mismatch]:
    """Every metric outside its limit across all records (cosine is not judged on random ids by default).

    Random ids are far from any real distribution, so their cosine says little; their NaN/Inf
    rates are still judged.
    """
    found: list[Mismatch] = []
    for record in records:
        judge_cosine = record.inputs != "random" or tolerances.cosine_on_random
        found += mismatches(record.case, record.outputs, tolerances.bar(record.precision, judge_cosine))
    return found


def raise_on_mismatch(records: Iterable[FidelityRecord], tolerances: Tolerances = Tolerances()) -> None:
    """Raise one :class:`FidelityError` holding every mismatch, if there is any."""
    mismatches = check_records(records, tolerances)
    if mismatches:
        raise FidelityError(mismatches)


def random_vs_text(records: Iterable[FidelityRecord]) -> list[dict[str, Any]]:
    """How random ids under/over-estimate NaN and Inf rates compared with real text, per case and output.

    Pairs each ``random`` record with the real-text records (``text``, ``sentences``) of the same
    model, precision, runtime, batch and seq.
    """
    by_key: dict[tuple[str, str, str, int, int], dict[str, FidelityRecord]] = {}
    for r in records:
        by_key.setdefault((r.model, r.precision, r.runtime, r.batch, r.seq), {})[r.inputs] = r
    rows: list[dict[str, Any]] = []
    for (model, precision, runtime, batch, seq), kinds in sorted(by_key.items()):
        random = kinds.get("random")
        if random is None:
            continue
        for kind, real in sorted(kinds.items()):
            if kind == "random":
                continue
            for output in sorted(set(random.outputs) & set(real.outputs)):
                row: dict[str, Any] = {
                    "model": model,
                    "precision": precision,
                    "runtime": runtime,
                    "batch": batch,
                    "seq": seq,
                    "real_inputs": kind,
                    "output": output,
                }
                for metric in ("nan_rate", "inf_rate"):
                    r_value = getattr(random.outputs[output], metric)
                    t_value = getattr(real.outputs[output], metric)
                    row[f"random_{metric}"], row[f"real_{metric}"] = r_value, t_value
                    row[f"{metric}_verdict"] = (
                        "agrees" if r_value == t_value else "underestimates" if r_value < t_value else "overestimates"
                    )
                rows.append(row)
    return rows


# -- summaries --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FidelitySummary:
    """The worst served output of one model and precision over its fidelity cases: the lowest cosines (minimum over
    tokens, and mean) on real text, the highest NaN and Inf rates on any input. Random ids are far from any real
    input, so their cosine is not judged (as ``check_records`` does not); NaN values are left out."""

    model: str
    precision: str
    cases: int
    cosine_min: float | None
    cosine_mean: float | None
    nan_rate: float | None
    inf_rate: float | None

    @classmethod
    def of(cls, records: Sequence[FidelityRecord]) -> FidelitySummary:
        real = [o for r in records if r.inputs != "random" for o in r.outputs.values()]
        every = [o for r in records for o in r.outputs.values()]
        return cls(
            records[0].model,
            records[0].precision,
            len(records),
            _finite(min, [o.cosine_min for o in real]),
            _finite(min, [o.cosine_mean for o in real]),
            _finite(max, [o.nan_rate for o in every]),
            _finite(max, [o.inf_rate for o in every]),
        )

    def row(self) -> list[Any]:
        """The cells of the report's fidelity table: cosines with 7 decimals, rates in percent."""
        cosines = ["–" if c is None else f"{c:.7f}" for c in (self.cosine_min, self.cosine_mean)]
        rates = ["–" if r is None else f"{100 * r:.3f}%" for r in (self.nan_rate, self.inf_rate)]
        return [self.model, self.precision, self.cases, *cosines, *rates]


def _finite(choose: Callable[[list[float]], float], values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return choose(finite) if finite else None


def by_model_and_precision(records: Iterable[FidelityRecord]) -> list[list[FidelityRecord]]:
    """The records of each (model, precision), by model, then precision in the enum's order."""
    groups: dict[tuple[str, str], list[FidelityRecord]] = defaultdict(list)
    for record in records:
        groups[(record.model, record.precision)].append(record)
    order = [p.value for p in Precision]
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], order.index(k[1]) if k[1] in order else 99, k[1]))]


def fidelity_summaries(records: Iterable[FidelityRecord]) -> list[FidelitySummary]:
    """One summary per (model, precision), by model, then precision in their usual order."""
    return [FidelitySummary.of(group) for group in by_model_and_precision(records)]


def _latency(records: Sequence[FidelityRecord]) -> tuple[str, float | None]:
    """The median latency of the smallest batch at the longest length (its label, e.g. ``b1 s128, 1 in flight``)."""
    timed = [r for r in records if r.latency_ms is not None]
    if not timed:
        return "", None
    batch = min(r.batch for r in timed)
    seq = max(r.seq for r in timed if r.batch == batch)
    chosen = [r for r in timed if r.batch == batch and r.seq == seq]
    flight = {r.concurrency for r in chosen}
    label = f"b{batch} s{seq}" + (f", {flight.pop()} in flight" if len(flight) == 1 and None not in flight else "")
    return label, statistics.median(r.latency_ms for r in chosen if r.latency_ms is not None)


def format_summary(records: Sequence[FidelityRecord], path: Path | None = None, tolerances: Tolerances = Tolerances()) -> str:
    """A short verdict per model and precision: worst cosine on real text, NaN/Inf, latency, the bar and PASS or
    FAIL (``check_records``' judgement, the one that makes ``python -m client fidelity`` fail), then the record."""
    rows = [("model", "precision", "worst cosine", "NaN / Inf", "latency p50", "bar", "verdict")]
    for group in by_model_and_precision(records):
        summary = FidelitySummary.of(group)
        label, latency = _latency(group)
        rates = [summary.nan_rate or 0.0, summary.inf_rate or 0.0]
        rates_bar = "no NaN/Inf" if not (tolerances.max_nan_rate or tolerances.max_inf_rate) else (
            f"NaN <= {100 * tolerances.max_nan_rate:g}%, Inf <= {100 * tolerances.max_inf_rate:g}%"
        )
        bar = f"cosine >= {tolerances.cosine_limit(summary.precision):g}, {rates_bar}"
        rows.append((
            summary.model, summary.precision, _fmt(summary.cosine_min, ".7f"),
            "none" if not any(rates) else f"{100 * rates[0]:.2f}% / {100 * rates[1]:.2f}%",
            "not recorded" if latency is None else f"{latency:.2f} ms ({label})", bar,
            "FAIL" if check_records(group, tolerances) else "PASS",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    heading = "Summary: served engines against the FP32 ONNX reference (worst cosine over every real-text case; NaN/Inf over every input)"
    return "\n".join([heading, *lines] + ([f"full record: {path}"] if path is not None else []))


# -- environment and results ------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    """Host, Python, GPUs and installed versions of the packages that shape the numbers."""
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpus": gpus(),
        "packages": package_versions(),
    }


def results_dir(root: Path, env: Mapping[str, Any] | None = None) -> Path:
    """``<root>/<device>``: the folder perf writes to as well (``h100``, ``cpu-...``; see ``device_folder``)."""
    env = env if env is not None else environment()
    gpus = env.get("gpus") or []
    return root / device_folder(gpus[0]["name"] if gpus else None)


def write_results(records: Sequence[FidelityRecord], path: Path, env: Mapping[str, Any] | None = None) -> Path:
    """Write ``{"environment", "records", "random_vs_text"}`` as JSON to ``path``; returns it."""
    payload = {
        "environment": dict(env) if env is not None else environment(),
        "records": [r.to_json() for r in records],
        "random_vs_text": _json_safe(random_vs_text(records)),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def format_table(records: Sequence[FidelityRecord]) -> str:
    """A fixed-width table: one line per case and output."""
    header = (
        "case", "output", "cos_mean", "cos_min", "max_abs", "mean_abs", "max_rel", "med_rel", "nan%", "inf%", "top1",
    )  # fmt: skip
    rows = [header]
    for r in records:
        for name, m in r.outputs.items():
            rows.append((
                r.case, name, _fmt(m.cosine_mean, ".6f"), _fmt(m.cosine_min, ".6f"), _fmt(m.max_abs, ".3g"),
                _fmt(m.mean_abs, ".3g"), _fmt(m.max_rel, ".3g"), _fmt(m.median_rel, ".3g"),
                _fmt(100 * m.nan_rate, ".2f"), _fmt(100 * m.inf_rate, ".2f"), _fmt(m.top1_agreement, ".4f"),
            ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def format_random_vs_text(rows: Sequence[Mapping[str, Any]]) -> str:
    """Counts of verdicts per metric, then one line per pairing where random ids and real text differ."""
    lines = []
    for metric in ("nan_rate", "inf_rate"):
        verdicts = Counter(r[f"{metric}_verdict"] for r in rows)
        counts = ", ".join(f"{v} {verdicts[v]}" for v in ("underestimates", "overestimates", "agrees"))
        lines.append(f"{metric}: random ids vs real text over {len(rows)} pairings: {counts}")
    lines += [
        f"  {r['model']}/{r['precision']} b{r['batch']} s{r['seq']} {r['output']} random vs {r['real_inputs']}: "
        f"NaN {r['random_nan_rate']:.4%} vs {r['real_nan_rate']:.4%}, Inf {r['random_inf_rate']:.4%} vs "
        f"{r['real_inf_rate']:.4%}"
        for r in rows
        if r["nan_rate_verdict"] != "agrees" or r["inf_rate_verdict"] != "agrees"
    ]
    return "\n".join(lines)


# -- the run ----------------------------------------------------------------------------------------


def _concat(parts: Sequence[Mapping[str, np.ndarray]], names: Sequence[str]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in names}


def run_fidelity(
    client: TritonTextClient,
    reference: OnnxReference,
    tokenizer: Tokenizer,
    name: str,
    precisions: Sequence[str],
    batch_sizes: Sequence[int],
    seq_lens: Sequence[int],
    input_kinds: Sequence[str],
    dataset: Dataset = "shipped",
    runtime: str = DEFAULT_RUNTIME,
    requests: int = 2,
    concurrency: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> list[FidelityRecord]:
    """Measure each served engine of ``name`` against the reference on every (inputs, batch, seq) case.

    Inputs are made once per case and shared by every precision; outputs compared are those the
    engine and the reference both have. Nothing is judged here: see :func:`check_records`.
    """
    from client.inputs import make_batches

    engines = {p: engine_model(name, Precision(p), runtime) for p in precisions}
    for engine in engines.values():
        client.require_model(engine)
    records: list[FidelityRecord] = []
    for kind in input_kinds:
        for batch in batch_sizes:
            for seq in seq_lens:
                token_batches = make_batches(kind, batch, seq, requests, tokenizer, dataset, seed)
                masks = np.concatenate([b.attention_mask for b in token_batches], axis=0)
                ref_parts = [reference.run(b.inputs(reference.input_names)) for b in token_batches]
                for precision, engine in engines.items():
                    names = [n for n in client.output_names(engine) if n in reference.output_names]
                    inputs = [b.inputs(client.input_names(engine)) for b in token_batches]
                    seconds: list[float] = []
                    got = _concat(client.infer_many(engine, inputs, concurrency, names, progress=progress, timings=seconds), names)
                    want = _concat(ref_parts, names)
                    record = FidelityRecord(name, precision, runtime, batch, seq, kind, dataset, requests, concurrency=concurrency)
                    record.latency_ms = 1000.0 * statistics.median(seconds)
                    for output in names:
                        top1 = output in TOP1_OUTPUTS
                        record.outputs[output] = compare_arrays(want[output], got[output], masks, top1)
                    records.append(record)
    return records
