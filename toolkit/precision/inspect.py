"""The precision report: where FP16 breaks a model, node by node and block by block, on text and on random ids.

The FP32 graph and a reduced-precision graph of it (full FP16 by default, or any policy's graph) run with
every intermediate floating-point tensor exposed, batch by batch; per tensor only statistics are kept (the
largest |value| in FP32 and its headroom against FP16's 65504, FP16-vs-FP32 cosine and max abs/rel error
through :mod:`toolkit.measurement.compare`, NaN/Inf counts). Per block (``layer.N`` / ``h.N`` from node
names; ``embeddings`` before, ``head`` after) the tensors leaving the block are judged. The first node in
topological order whose output goes non-finite, and the first whose cosine falls below a threshold, are
named for each data set, side by side: random ids and real text can break a model in different places.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.measurement.compare import compare_arrays
from toolkit.precision.data import DataSet, DataSource
from toolkit.precision.emulate import RAW_SUFFIX
from toolkit.precision.policy import FP16_MAX
from toolkit.precision.probe import ProbeNode, prepared_copy, probe_nodes, run_session, session_of, tensor_types, with_outputs

if TYPE_CHECKING:
    import onnx

SCHEMA_VERSION = 1
# A tensor "diverges" when some row's cosine against FP32 falls below this (FP16 rounding alone stays far above).
DIVERGE_COSINE = 0.999
REPORT_FILE, REPORT_PLOT = "report.json", "report.png"  # what write_report leaves in its folder


@dataclass(frozen=True)
class TensorStats:
    """How one tensor of the candidate graph differs from FP32 over a whole data set."""

    elements: int
    fp32_max_abs: float
    cosine_min: float
    max_abs_error: float
    max_rel_error: float
    nan: int
    inf: int
    reference_nonfinite: int = 0
    top1_agreement: float | None = None

    @property
    def headroom(self) -> float:
        """FP16_MAX / largest finite |value| in FP32: below 1 the value does not fit FP16."""
        return math.inf if self.fp32_max_abs == 0 else FP16_MAX / self.fp32_max_abs

    @property
    def nonfinite(self) -> int:
        return self.nan + self.inf


@dataclass
class _Accumulator:
    """Running :class:`TensorStats` over batches (statistics only; the tensors are dropped)."""

    top1: bool = False
    elements: int = 0
    fp32_max_abs: float = 0.0
    cosines: list[float] = field(default_factory=list)
    max_abs: float = math.nan
    max_rel: float = math.nan
    nan: int = 0
    inf: int = 0
    reference_nonfinite: int = 0
    agree: float = 0.0
    rows: int = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.float32)
        metrics = compare_arrays(ref, np.asarray(candidate, dtype=np.float32), top1=self.top1)
        finite = np.abs(ref[np.isfinite(ref)])
        self.fp32_max_abs = max(self.fp32_max_abs, float(finite.max()) if finite.size else 0.0)
        self.reference_nonfinite += int(ref.size - finite.size)
        self.elements += metrics.elements
        self.nan += round(metrics.nan_rate * metrics.elements)
        self.inf += round(metrics.inf_rate * metrics.elements)
        self.cosines.append(metrics.cosine_min)
        self.max_abs = _larger(self.max_abs, metrics.max_abs)
        self.max_rel = _larger(self.max_rel, metrics.max_rel)
        if metrics.top1_agreement is not None:
            rows = ref.size // ref.shape[-1] if ref.ndim >= 2 else 1
            self.agree += metrics.top1_agreement * rows
            self.rows += rows

    def stats(self) -> TensorStats:
        finite = [value for value in self.cosines if not math.isnan(value)]
        return TensorStats(
            elements=self.elements,
            fp32_max_abs=self.fp32_max_abs,
            cosine_min=min(finite) if finite else math.nan,
            max_abs_error=self.max_abs,
            max_rel_error=self.max_rel,
            nan=self.nan,
            inf=self.inf,
            reference_nonfinite=self.reference_nonfinite,
            top1_agreement=self.agree / self.rows if self.rows else None,
        )


def _larger(first: float, second: float) -> float:
    """The larger of two values, ignoring NaN (NaN when both are)."""
    return second if math.isnan(first) else (first if math.isnan(second) else max(first, second))


@dataclass(frozen=True)
class NodeStats:
    """One node's output in the report."""

    index: int
    name: str
    op_type: str
    block: str
    tensor: str
    stats: TensorStats


@dataclass(frozen=True)
class BlockStats:
    """One transformer block (or the embeddings / head): its worst tensor leaving the block, its largest value."""

    block: str
    nodes: int
    fp32_max_abs: float
    output: str
    output_stats: TensorStats
    nonfinite_nodes: int

    @property
    def headroom(self) -> float:
        return math.inf if self.fp32_max_abs == 0 else FP16_MAX / self.fp32_max_abs


@dataclass(frozen=True)
class Finding:
    """The first node (topological order) whose candidate output goes non-finite or diverges."""

    node: str
    op_type: str
    block: str
    index: int
    reason: str
    detail: str


@dataclass(frozen=True)
class DataReport:
    """The report on one data set."""

    source: DataSource
    nodes: tuple[NodeStats, ...]
    blocks: tuple[BlockStats, ...]
    outputs: dict[str, TensorStats]
    first_nonfinite: Finding | None
    first_diverged: Finding | None


@dataclass(frozen=True)
class PrecisionReport:
    """Per node and per block, the candidate graph (``fp16`` unless told) against FP32, on each data set."""

    model: str
    candidate: str
    threshold: float
    runs: dict[str, DataReport]
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record (non-finite floats as null)."""
        return _finite(asdict(self))

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> PrecisionReport:
        """The report written by :meth:`to_json` (this schema version)."""
        if record.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"precision report schema {record.get('schema_version')} is not {SCHEMA_VERSION}; run inspect again")
        runs = {kind: _data_report(run) for kind, run in record["runs"].items()}
        return cls(record["model"], record["candidate"], record["threshold"], runs, record["schema_version"])

    def first_bad(self, kind: str) -> Finding | None:
        """The first non-finite node on data set ``kind``, else the first diverging one."""
        run = self.runs[kind]
        return run.first_nonfinite or run.first_diverged


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _stats(record: Mapping[str, Any]) -> TensorStats:
    values: dict[str, Any] = {key: (math.nan if value is None and key != "top1_agreement" else value) for key, value in record.items()}
    return TensorStats(**values)


def _data_report(record: Mapping[str, Any]) -> DataReport:
    nodes = tuple(NodeStats(**{**node, "stats": _stats(node["stats"])}) for node in record["nodes"])
    blocks = tuple(
        BlockStats(**{**block, "fp32_max_abs": block["fp32_max_abs"] or 0.0, "output_stats": _stats(block["output_stats"])})
        for block in record["blocks"]
    )
    findings = [Finding(**item) if item else None for item in (record["first_nonfinite"], record["first_diverged"])]
    outputs = {name: _stats(stats) for name, stats in record["outputs"].items()}
    return DataReport(DataSource.from_json(record["source"]), nodes, blocks, outputs, findings[0], findings[1])


def precision_report(
    fp32: onnx.ModelProto,
    datasets: Sequence[DataSet],
    candidate: onnx.ModelProto | None = None,
    candidate_name: str = "fp16",
    threshold: float = DIVERGE_COSINE,
    model_name: str = "",
    top1_outputs: frozenset[str] = frozenset(),
    emulate: bool = True,
    progress: bool = False,
) -> PrecisionReport:
    """Run ``fp32`` and ``candidate`` (default: the full FP16 graph of ``fp32``) on every data set with every
    intermediate float tensor exposed; returns the per-node, per-block report.

    ``emulate`` runs the candidate as a GPU stores FP16 (:mod:`toolkit.precision.emulate`); False runs it as
    written on ONNX Runtime's CPU provider, which keeps some FP16 values in FP32."""
    from toolkit.precision.emulate import fp16_emulation
    from toolkit.precision.policy import fp16_from_fp32

    reference = prepared_copy(fp32)
    types = tensor_types(reference)
    nodes = probe_nodes(reference, types)
    reduced = candidate if candidate is not None else fp16_from_fp32(prepared_copy(fp32))
    reduced = fp16_emulation(reduced) if emulate else reduced
    reduced_tensor = _candidate_tensors(reference, reduced, nodes)
    nodes = [node for node in nodes if node.name in reduced_tensor]
    reduced_types = tensor_types(reduced)
    ref_session = session_of(with_outputs(reference, [node.tensor for node in nodes], types))
    cand_session = session_of(with_outputs(reduced, list(reduced_tensor.values()), reduced_types))
    outputs = [output.name for output in reference.graph.output if types.get(output.name) == 1]
    leaving = _leaving_tensors(reference, {node.name: node.block for node in nodes})
    runs = {}
    for dataset in datasets:
        node_acc = {node.name: _Accumulator() for node in nodes}
        output_acc = {name: _Accumulator(top1=name in top1_outputs) for name in outputs}
        for batch in _batches(dataset, progress):
            ref, cand = run_session(ref_session, batch), run_session(cand_session, batch)
            for node in nodes:
                node_acc[node.name].update(ref[node.tensor], cand[reduced_tensor[node.name]])
            for name in outputs:
                output_acc[name].update(ref[name], cand[name])
        stats = [NodeStats(n.index, n.name, n.op_type, n.block, n.tensor, node_acc[n.name].stats()) for n in nodes]
        runs[dataset.kind] = _data_report_of(dataset.source, stats, {k: a.stats() for k, a in output_acc.items()}, leaving, threshold)
    return PrecisionReport(model_name, candidate_name, threshold, runs)


def _batches(dataset: DataSet, progress: bool) -> Sequence[dict[str, np.ndarray]]:
    if not progress:
        return dataset.batches
    from tqdm import tqdm

    return tqdm(dataset.batches, desc=f"inspect {dataset.kind}", unit="batch", leave=False)


def _candidate_tensors(reference: onnx.ModelProto, candidate: onnx.ModelProto, nodes: Sequence[ProbeNode]) -> dict[str, str]:
    """Each probed node's own output in the candidate graph: a node kept in FP32 writes its value before the
    converter's cast, so its output there is the node's output at the same position, not the cast's; an FP16
    node's value in an emulated graph is the rounded one (the raw FP32 result carries ``RAW_SUFFIX``)."""
    reference_position = {node.name: list(node.output) for node in reference.graph.node}
    candidate_outputs = {node.name: list(node.output) for node in candidate.graph.node}
    mapping = {}
    for node in nodes:
        outputs = candidate_outputs.get(node.name)
        if outputs is not None:
            mapping[node.name] = outputs[reference_position[node.name].index(node.tensor)].removesuffix(RAW_SUFFIX)
    return mapping


def _leaving_tensors(model: onnx.ModelProto, block_of: Mapping[str, str]) -> dict[str, list[str]]:
    """Per block, the probed tensors read outside it (or returned by the graph)."""
    producer_block = {out: block_of[node.name] for node in model.graph.node if node.name in block_of for out in node.output}
    graph_outputs = {output.name for output in model.graph.output}
    leaving: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            block = producer_block.get(name)
            if block is not None and block_of.get(node.name) != block and name not in leaving.get(block, []):
                leaving.setdefault(block, []).append(name)
    for name in graph_outputs:
        if name in producer_block and name not in leaving.get(producer_block[name], []):
            leaving.setdefault(producer_block[name], []).append(name)
    return leaving


def _worst(stats: Sequence[NodeStats]) -> NodeStats:
    """The tensor furthest from FP32: non-finite first, then the lowest cosine."""
    return min(stats, key=lambda s: (-s.stats.nonfinite, s.stats.cosine_min if not math.isnan(s.stats.cosine_min) else -2.0))


def _data_report_of(
    source: DataSource,
    stats: list[NodeStats],
    outputs: dict[str, TensorStats],
    leaving: Mapping[str, list[str]],
    threshold: float,
) -> DataReport:
    by_block: dict[str, list[NodeStats]] = {}
    for node in stats:
        by_block.setdefault(node.block, []).append(node)
    blocks = []
    for block, members in by_block.items():
        escaping = [node for node in members if node.tensor in leaving.get(block, [])] or members[-1:]
        worst = _worst(escaping)
        blocks.append(
            BlockStats(
                block=block,
                nodes=len(members),
                fp32_max_abs=max(node.stats.fp32_max_abs for node in members),
                output=worst.tensor,
                output_stats=worst.stats,
                nonfinite_nodes=sum(1 for node in members if node.stats.nonfinite),
            )
        )
    return DataReport(source, tuple(stats), tuple(blocks), outputs, _first_nonfinite(stats), _first_diverged(stats, threshold))


def _first_nonfinite(stats: Sequence[NodeStats]) -> Finding | None:
    for node in stats:
        s = node.stats
        if s.nonfinite and not s.reference_nonfinite:
            detail = f"{s.nan} NaN, {s.inf} Inf of {s.elements}; largest |value| in FP32 {s.fp32_max_abs:.6g} (FP16 max {FP16_MAX:g})"
            return Finding(node.name, node.op_type, node.block, node.index, "non-finite", detail)
    return None


def _first_diverged(stats: Sequence[NodeStats], threshold: float) -> Finding | None:
    for node in stats:
        cosine = node.stats.cosine_min
        if not math.isnan(cosine) and cosine < threshold:
            detail = f"cosine {cosine:.6f} < {threshold}; max abs error {node.stats.max_abs_error:.3g}"
            return Finding(node.name, node.op_type, node.block, node.index, "diverged", detail)
    return None


def write_report(report: PrecisionReport, folder: Path, plot: bool = True) -> list[Path]:
    """``report.json`` (and ``report.png``) in ``folder``; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_FILE
    path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    written = [path]
    if plot:
        from toolkit.precision.report_views import plot_report

        written.append(plot_report(report, folder / REPORT_PLOT))
    return written


def read_report(path: Path) -> PrecisionReport:
    """A report written by :func:`write_report`."""
    return PrecisionReport.from_json(json.loads(path.read_text()))
