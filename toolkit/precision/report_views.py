"""Views of a precision report: the terminal table and the PNG plot of error and headroom against depth."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from toolkit.precision.inspect import BlockStats, DataReport, Finding, PrecisionReport, TensorStats
from toolkit.precision.policy import FP16_MAX


def _num(value: float | None, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return format(value, spec)


def _cosine(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.7f}"


def _data_line(kind: str, run: DataReport) -> str:
    source = run.source
    where = f"{source.file} (sha256 {source.sha256[:12]}...)" if source.file and source.sha256 else f"ids in {list(source.id_range or ())}"
    return f"  {kind}: {where}, {source.rows} rows x {source.seq_len} tokens"


def _block_cells(block: BlockStats | None) -> list[str]:
    if block is None:
        return ["-"] * 5
    s = block.output_stats
    return [_num(block.fp32_max_abs), _num(block.headroom, ".2f"), _cosine(s.cosine_min), _num(s.max_abs_error), f"{s.nan}/{s.inf}"]


def _finding(kind: str, label: str, finding: Finding | None) -> str:
    if finding is None:
        return f"  {kind}: no {label} node"
    return f"  {kind}: first {label} node {finding.node} ({finding.op_type}, {finding.block}): {finding.detail}"


def _outputs_line(kind: str, outputs: dict[str, TensorStats]) -> str:
    parts = []
    for name, s in outputs.items():
        top1 = f", top-1 {s.top1_agreement:.4f}" if s.top1_agreement is not None else ""
        parts.append(f"{name} cosine {_cosine(s.cosine_min)}, NaN/Inf {s.nan}/{s.inf}{top1}")
    return f"  {kind}: " + "; ".join(parts)


def format_report(report: PrecisionReport) -> str:
    """The report as a terminal table: one row per block, the data sets side by side, then the first bad nodes."""
    kinds = list(report.runs)
    order: list[str] = []
    for run in report.runs.values():
        order += [block.block for block in run.blocks if block.block not in order]
    header = ["block"] + [f"{kind} {column}" for kind in kinds for column in ("max|x|", "headroom", "cosine", "max abs", "NaN/Inf")]
    rows = [header]
    for name in order:
        cells = [name]
        for kind in kinds:
            cells += _block_cells(next((b for b in report.runs[kind].blocks if b.block == name), None))
        rows.append(cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        f"{report.model or 'model'}: {report.candidate} against fp32 (headroom = {FP16_MAX:g} / max|x|; block output = its worst tensor read outside it)"
    ]
    lines += [_data_line(kind, run) for kind, run in report.runs.items()]
    lines += [
        "  ".join(cell.rjust(width) if i else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
        for row in rows
    ]
    lines += ["first non-finite:"] + [_finding(kind, "non-finite", run.first_nonfinite) for kind, run in report.runs.items()]
    lines += [f"first diverging (cosine < {report.threshold}):"] + [
        _finding(kind, "diverging", run.first_diverged) for kind, run in report.runs.items()
    ]
    lines += ["graph outputs:"] + [_outputs_line(kind, run.outputs) for kind, run in report.runs.items()]
    return "\n".join(lines)


def plot_report(report: PrecisionReport, path: Path) -> Path:
    """Two panels against depth (node index, block boundaries marked): FP16 headroom of each node's FP32
    output, and its FP16-vs-FP32 error (1 - cosine; non-finite outputs at the top), per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    for kind, run in report.runs.items():
        depth = [node.index for node in run.nodes]
        headroom = [min(node.stats.headroom, 1e9) for node in run.nodes]
        top.plot(depth, headroom, ".", markersize=3, label=kind)
        error = [_error(node.stats) for node in run.nodes]
        bottom.plot(depth, error, ".", markersize=3, label=kind)
        bad = report.first_bad(kind)
        if bad is not None:
            bottom.axvline(bad.index, linestyle=":", linewidth=1, color=bottom.lines[-1].get_color())
    top.axhline(1.0, color="red", linewidth=1, label=f"FP16 max {FP16_MAX:g}")
    bottom.axhline(1 - report.threshold, color="grey", linewidth=1, linestyle="--", label=f"1 - {report.threshold}")
    first = next(iter(report.runs.values()))
    _mark_blocks([top, bottom], first)
    top.set(yscale="log", ylabel="headroom (FP16 max / max|x| in FP32)", title=f"{report.model}: {report.candidate} against fp32 by depth")
    bottom.set(yscale="log", ylabel="1 - cosine (worst row)", xlabel="node (topological order)")
    top.legend(loc="lower left", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _error(stats: TensorStats) -> float:
    if stats.nonfinite or math.isnan(stats.cosine_min):
        return 1.0
    return max(1.0 - stats.cosine_min, 1e-9)


def _mark_blocks(axes: list[Any], run: DataReport) -> None:
    starts: dict[str, int] = {}
    for node in run.nodes:
        starts.setdefault(node.block, node.index)
    for axis in axes:
        for start in starts.values():
            axis.axvline(start, color="lightgrey", linewidth=0.8, zorder=0)
    axes[0].set_xticks(list(starts.values()), list(starts), rotation=45, fontsize=7)
    axes[1].tick_params(labelbottom=True)
