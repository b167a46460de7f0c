"""Report sections from the engine-only grid (``grid.jsonl``): targets, per-model tables and heat maps,
and GPUs side by side. ``perf.report`` places them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.plots import heatmap, image, table
from perf.targets import evaluate, grid_records, targets_markdown

PRECISIONS = ("fp32", "fp16", "hybrid")
# The points every GPU run covers first (those of the targets): compared side by side across GPUs.
KEY_BATCHES, KEY_SEQS = (1, 8, 32), (32, 128, 512)


def _points(device_dir: Path) -> dict[tuple[str, int, int], dict[str, dict[str, Any]]]:
    """{(model, batch, seq): {precision or 'cpu_fp32': record}} of the last grid run."""
    points: dict[tuple[str, int, int], dict[str, dict[str, Any]]] = defaultdict(dict)
    for record in grid_records(device_dir).values():
        if record.get("kind") == "engine":
            points[(record["model"], record["batch_size"], record["seq_len"])][record["precision"]] = record
        elif record.get("kind") == "cpu_baseline":
            points[(record["model"], record["batch_size"], record["seq_len"])]["cpu_fp32"] = record
    return points


def _ms(point: dict[str, dict[str, Any]], name: str) -> float | None:
    return (point.get(name) or {}).get("median_ms")


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def grid_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    """Targets, then per model a table of every grid point and heat maps of the FP16 speedup and hybrid cost."""
    points = _points(device_dir)
    if not points:
        return []
    md = ["### Targets (issue #6), engine-only grid and Triton\n"]
    environments = [r for r in rf.read_jsonl(device_dir / rf.GRID_FILE) if r.get("kind") == "environment"]
    if environments:
        info, packages = environments[-1].get("device_info") or {}, environments[-1].get("packages") or {}
        md.append(
            f"Grid run {environments[-1].get('run_id')} (code {environments[-1].get('code') or 'unrecorded'}): GPU {info.get('gpu') or 'none'}, driver {info.get('driver') or '–'}, CUDA "
            f"{info.get('cuda') or '–'}, CPU {info.get('cpu')} ({info.get('cpu_count')} threads); "
            + ", ".join(f"{k} {v}" for k, v in sorted(packages.items()))
            + "\n"
        )
    md.append(targets_markdown(device_dir))
    plots.mkdir(parents=True, exist_ok=True)
    for model in sorted({m for m, _, _ in points}):
        rows = []
        heat: list[dict[str, Any]] = []
        for (m, batch, seq), point in sorted(points.items()):
            if m != model:
                continue
            fp32, fp16, hybrid = (_ms(point, p) for p in PRECISIONS)
            cosine = (point.get("hybrid") or {}).get("cosine_min")
            bad = sum((point.get(p) or {}).get("nan_count", 0) + (point.get(p) or {}).get("inf_count", 0) for p in ("fp16", "hybrid"))
            graph = "yes" if (point.get("fp16") or {}).get("cuda_graph") else "no"
            cpu = _ms(point, "cpu_fp32")
            rows.append(
                [
                    batch,
                    seq,
                    graph,
                    fp32,
                    fp16,
                    hybrid,
                    _div(fp32, fp16),
                    _div(hybrid, fp16),
                    _div(cpu, fp16),
                    None if cosine is None else f"{cosine:.7f}",
                    bad,
                ]
            )
            heat.append({"batch_size": batch, "seq_len": seq, "fp16_speedup": _div(fp32, fp16), "hybrid_cost": _div(hybrid, fp16)})
        md.append(f"#### {model}: engine-only grid ({len(rows)} shapes x {len(PRECISIONS)} precisions)\n")
        for value, title in (("fp16_speedup", "FP32 / FP16 time"), ("hybrid_cost", "hybrid / FP16 time")):
            image(md, heatmap(heat, value, f"{model}: {title}", plots / f"grid_{value}_{model}.png"), out)
        headers = [
            "batch",
            "seq",
            "graph",
            "fp32 ms",
            "fp16 ms",
            "hybrid ms",
            "fp32/fp16",
            "hybrid/fp16",
            "CPU fp32/fp16",
            "hybrid cos min",
            "fp16+hybrid NaN/Inf",
        ]
        md.append(table(headers, rows) + "\n")
    return md


def gpu_comparison(device_dirs: list[Path]) -> list[str]:
    """Targets and key grid points of every GPU folder side by side (only with two or more)."""
    measured = {d.name: _points(d) for d in device_dirs if not d.name.startswith("cpu")}
    points = {name: found for name, found in measured.items() if found}
    dirs = [d for d in device_dirs if d.name in points]
    if len(dirs) < 2:
        return []
    names = [d.name for d in dirs]
    md = ["## GPUs side by side\n", "Each GPU's numbers come from its own run; ratios within a column are from one run.\n"]
    targets = {d.name: evaluate(d) for d in dirs}
    first = targets[names[0]]
    md.append(
        table(
            ["target", "wanted", *names],
            ([t.name, t.wanted, *(f"{targets[n][i].measured} ({targets[n][i].verdict})" for n in names)] for i, t in enumerate(first)),
        )
        + "\n"
    )
    rows = []
    for model in sorted({m for p in points.values() for m, _, _ in p}):
        for batch in KEY_BATCHES:
            for seq in KEY_SEQS:
                for precision in PRECISIONS:
                    values = [_ms(points[n].get((model, batch, seq), {}), precision) for n in names]
                    if any(v is not None for v in values):
                        rows.append([model, batch, seq, precision, *values, _div(values[0], values[-1])])
    md.append(f"### Engine-only median latency (ms) at the key points; last column: {names[0]} / {names[-1]}\n")
    md.append(table(["model", "batch", "seq", "precision", *names, "ratio"], rows) + "\n")
    return md
