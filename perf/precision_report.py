"""Report section of the precision searches kept under ``<device>/precision/<name>/`` (``scripts/gpu_pipeline.sh
precision``, or ``python -m toolkit.precision search --out``): per model the result table (fp16, hybrid, the
searched ``auto`` and onnxconverter-common's ``auto_convert_mixed_precision``: FP32 nodes, worst cosine against
FP32, NaN/Inf, the bar, GPU latency against FP16) and the precision report's plot. ``perf.report`` places it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from perf.plots import table
from toolkit.precision.inspect import REPORT_PLOT
from toolkit.precision.variants import VARIANTS_FILE, VariantRow, read_variant_rows

PRECISION_FOLDER = "precision"


def _cosine(value: float | None) -> str:
    return "NaN" if value is None else f"{value:.7f}"


def _row(row: VariantRow) -> list[Any]:
    latency = None if row.latency_ms is None else f"{row.latency_ms:.3f}"
    versus = None if row.latency_vs_fp16 is None else f"{row.latency_vs_fp16:.3f}x"
    top1 = None if row.min_top1 is None else f"{row.min_top1:.4f}"
    return [row.model, row.variant, f"{row.fp32_nodes}/{row.compute_nodes}", f"{row.fp32_flop_share:.2%}", _cosine(row.worst_cosine),
            row.nonfinite, top1, "met" if row.met else "**fails**", latency, versus]  # fmt: skip


def precision_section(device_dir: Path, out: Path) -> list[str]:
    """One table of every searched model's variants, then each model's plot of error and headroom against depth."""
    folders = sorted(f for f in (device_dir / PRECISION_FOLDER).glob("*") if (f / VARIANTS_FILE).is_file())
    if not folders:
        return []
    rows = [row for folder in folders for row in read_variant_rows(folder / VARIANTS_FILE)]
    headers = ["model", "variant", "FP32 nodes", "FP32 FLOPs", "worst cosine", "NaN/Inf", "top-1", "bar", "GPU ms", "vs fp16"]
    md = [
        "### Precision policies: FP16, hybrid and the searched `auto` (`python -m toolkit.precision search`)\n",
        "Each variant judged on the shipped text against FP32 (bar: worst-row cosine >= 0.9998 on every output, no "
        "NaN/Inf, next-token agreement for GPT-2), timed as a fused graph on this GPU in a process of its own. "
        "`auto_convert_mixed_precision`: onnxconverter-common's search on the same data and bar.\n",
        table(headers, (_row(r) for r in rows)) + "\n",
    ]
    for folder in folders:
        if (folder / REPORT_PLOT).is_file():
            md.append(f"![precision report {folder.name}]({os.path.relpath(folder / REPORT_PLOT, out)})\n")
    return md
