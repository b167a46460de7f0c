"""The result table: fp16, hybrid, auto (the searched policy) and onnxconverter-common's
``auto_convert_mixed_precision`` (the baseline to beat) on one model, judged side by side on the same data and bar.

Per variant: FP32 compute nodes (by the precision each node runs at in the variant's graph), their share of
the FLOPs, worst cosine, NaN/Inf, top-1 agreement, whether the bar is met, and, where a GPU is present, the
fused graph's latency against fp16's.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.measurement.compare import compare_outputs, mismatches
from toolkit.precision.costs import NodeCosts
from toolkit.precision.data import DataSet
from toolkit.precision.evaluate import Judge
from toolkit.precision.policy_file import PolicyBar, PrecisionPolicy, graph_from_policy
from toolkit.precision.probe import prepared_copy

if TYPE_CHECKING:
    import onnx

BASELINE = "auto_convert_mixed_precision"
VARIANTS_FILE = "variants.json"  # the result table, beside the precision report and the policy
BASELINE_ATTEMPTS = 400
# Latency of a variant's graph where a GPU is present (variant name, its FP32 node names) -> ms.
VariantLatency = Callable[[str, frozenset[str]], float]


@dataclass(frozen=True)
class VariantRow:
    """One variant of one model in the result table."""

    model: str
    variant: str
    fp32_nodes: int
    compute_nodes: int
    fp32_flop_share: float
    worst_cosine: float | None
    nonfinite: int
    min_top1: float | None
    met: bool
    latency_ms: float | None = None
    latency_vs_fp16: float | None = None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_variant_rows(path: Path) -> list[VariantRow]:
    """A ``variants.json`` written by ``python -m toolkit.precision search``."""
    return [VariantRow(**row) for row in json.loads(Path(path).read_text())]


def fp32_compute_nodes(graph: onnx.ModelProto, costs: NodeCosts) -> frozenset[str]:
    """Compute nodes of ``costs`` that run in FP32 (or mixed) in ``graph``, by the precision of their inputs."""
    from toolkit.precision.policy import node_precisions

    return frozenset(name for name, kind in node_precisions(graph).items() if name in costs.flops and kind in ("fp32", "mixed"))


def variant_rows(
    fp32: onnx.ModelProto,
    data: DataSet,
    bar: PolicyBar,
    policy: PrecisionPolicy,
    costs: NodeCosts,
    model_name: str = "",
    baseline: bool = True,
    latency: VariantLatency | None = None,
    emulate: bool = True,
) -> list[VariantRow]:
    """The table's rows for ``fp32``: fp16, hybrid, auto (``policy``) and, with ``baseline``, the baseline."""
    from toolkit.names import Precision
    from toolkit.precision.policy import variant_from_fp32

    prepared = prepared_copy(fp32)
    judge = Judge(prepared, data, bar, emulate)
    graphs: dict[str, tuple[onnx.ModelProto | None, str]] = {
        "fp16": (variant_from_fp32(prepared, Precision.FP16), ""),
        "hybrid": (variant_from_fp32(prepared, Precision.HYBRID), ""),
        "auto": (graph_from_policy(prepared, policy), "" if policy.met else policy.message),
    }
    if baseline:
        graphs[BASELINE] = baseline_graph(prepared, data, bar)
    rows = [_row(model_name, name, graph, note, judge, costs, latency) for name, (graph, note) in graphs.items()]
    fp16_ms = rows[0].latency_ms
    if fp16_ms:
        rows = [VariantRow(**{**row.to_json(), "latency_vs_fp16": row.latency_ms / fp16_ms if row.latency_ms else None}) for row in rows]
    return rows


def _row(
    model: str, name: str, graph: onnx.ModelProto | None, note: str, judge: Judge, costs: NodeCosts, latency: VariantLatency | None
) -> VariantRow:
    if graph is None:
        return VariantRow(model, name, 0, len(costs.flops), math.nan, None, 0, None, False, note=note)
    measured = judge.measure(graph)
    nodes = fp32_compute_nodes(graph, costs)
    detail = "; ".join(part for part in (note, "; ".join(measured.failures[:2])) if part)
    return VariantRow(
        model=model,
        variant=name,
        fp32_nodes=len(nodes),
        compute_nodes=len(costs.flops),
        fp32_flop_share=costs.flop_share(nodes),
        worst_cosine=measured.worst_cosine,
        nonfinite=measured.nonfinite,
        min_top1=measured.min_top1,
        met=measured.met,
        latency_ms=latency(name, nodes) if latency is not None else None,
        note=detail,
    )


def baseline_graph(
    prepared: onnx.ModelProto, data: DataSet, bar: PolicyBar, max_attempts: int = BASELINE_ATTEMPTS
) -> tuple[onnx.ModelProto | None, str]:
    """onnxconverter-common's ``auto_convert_mixed_precision`` on all of ``data`` as one feed, validated with the
    same comparator and bar; returns the graph (None when it fails) and a note saying why it failed.

    It converts with the settings every variant here gets: the exporter's own Casts kept as written (the
    converter retypes a Cast's output but not its ``to``, which breaks every attempt otherwise) and FP16's true
    limit instead of its 1e4 clamp (which would rewrite large weights). Its bisection runs the graphs as ONNX
    Runtime's CPU provider does (not emulated), and stops after ``max_attempts`` conversions.
    """
    from unittest import mock

    from onnxconverter_common import float16
    from onnxconverter_common.auto_mixed_precision import auto_convert_mixed_precision

    from toolkit.precision.policy import FP16_MAX

    declared = {item.name for item in prepared.graph.input}
    feeds = {name: value for name, value in data.joined().items() if name in declared}
    names = [output.name for output in prepared.graph.output]
    top1 = bar.top1_of(names)
    exporter_casts = [node.name for node in prepared.graph.node if node.op_type == "Cast"]
    convert = float16.convert_float_to_float16
    attempts = [0]

    def validate(reference: list[np.ndarray], candidate: list[np.ndarray]) -> bool:
        compared = compare_outputs(dict(zip(names, reference, strict=True)), dict(zip(names, candidate, strict=True)), top1_outputs=top1)
        return not mismatches("baseline", compared, bar.bar())

    def converted(model: onnx.ModelProto, node_block_list: list[str] | None = None, **options: Any) -> onnx.ModelProto:
        attempts[0] += 1
        if attempts[0] > max_attempts:
            raise RuntimeError(f"gave up after {max_attempts} conversions")
        blocked = [*(node_block_list or []), *exporter_casts]
        return convert(model, node_block_list=blocked, **{**options, "max_finite_val": FP16_MAX})

    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            mock.patch.object(float16, "convert_float_to_float16", converted),
        ):  # it prints every attempt
            graph = auto_convert_mixed_precision(prepared_copy(prepared), feeds, validate_fn=validate, keep_io_types=True)
    except Exception as error:  # a third-party search: any failure is reported in the table, not raised
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return None, f"{BASELINE} failed: {type(error).__name__}: {first[:300]}"
    return graph, f"{attempts[0]} conversions"


def format_rows(rows: list[VariantRow]) -> str:
    """The result table as aligned text."""
    header = ["model", "variant", "FP32 nodes", "FP32 FLOPs", "worst cosine", "NaN/Inf", "top-1", "bar", "latency", "vs fp16", "note"]
    lines = [header]
    for row in rows:
        lines.append(
            [
                row.model,
                row.variant,
                f"{row.fp32_nodes}/{row.compute_nodes}",
                "-" if math.isnan(row.fp32_flop_share) else f"{100 * row.fp32_flop_share:.2f}%",
                "nan" if row.worst_cosine is None else f"{row.worst_cosine:.7f}",
                str(row.nonfinite),
                "-" if row.min_top1 is None else f"{row.min_top1:.4f}",
                "met" if row.met else "FAILS",
                "-" if row.latency_ms is None else f"{row.latency_ms:.3f} ms",
                "-" if row.latency_vs_fp16 is None else f"{row.latency_vs_fp16:.3f}x",
                row.note[:100],
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() for line in lines)
