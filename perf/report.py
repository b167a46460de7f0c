"""``results/REPORT.md`` and its PNG plots, from every ``results/<device>/`` folder.

Plots (matplotlib, Agg): latency vs batch and vs sequence length per precision, speedup heat maps
(batch x sequence) over the CPU FP32 baseline, throughput vs concurrency, engine size / GPU memory
bars, fidelity per precision (from ``results/*/fidelity*.json`` when present), and a cross-device
table when more than one device folder exists. Missing inputs leave their section out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.grid_report import gpu_comparison, grid_section
from perf.sweep import derive
from toolkit.names import Precision

PRECISION_ORDER = [p.value for p in Precision]
NOTES_FILE = "NOTES.md"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def _table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pick(values: Iterable[int], preferred: int) -> int:
    ordered = sorted(set(values))
    return preferred if preferred in ordered else ordered[len(ordered) // 2]


def _line_plot(
    rows: list[dict[str, Any]], x: str, y: str, series: str, title: str, xlabel: str, ylabel: str, path: Path, log_x: bool = False
) -> Path | None:
    groups: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        if row.get(y) is not None:
            groups[row[series]].append((row[x], row[y]))
    if not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted(groups, key=lambda n: (PRECISION_ORDER.index(n) if n in PRECISION_ORDER else 99, str(n))):
        points = sorted(groups[name])
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=str(name))
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _heatmap(rows: list[dict[str, Any]], value: str, title: str, path: Path) -> Path | None:
    cells = {(r["batch_size"], r["seq_len"]): r[value] for r in rows if r.get(value) is not None}
    if not cells:
        return None
    batches = sorted({b for b, _ in cells})
    seqs = sorted({s for _, s in cells})
    import numpy as np

    grid = np.full((len(batches), len(seqs)), np.nan)
    for (b, s), v in cells.items():
        grid[batches.index(b), seqs.index(s)] = v
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(seqs) + 2, 0.6 * len(batches) + 1.8))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(seqs)), [str(s) for s in seqs])
    ax.set_yticks(range(len(batches)), [str(b) for b in batches])
    for (i, j), v in np.ndenumerate(grid):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white", fontsize=8)
    ax.set(title=title, xlabel="sequence length", ylabel="batch size")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _bars(labels: list[str], series: dict[str, list[float | None]], title: str, ylabel: str, path: Path) -> Path | None:
    if not labels or not any(v is not None for values in series.values() for v in values):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(labels) + 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        ax.bar([i + k * width for i in range(len(labels))], [v if v is not None else 0 for v in values], width=width, label=name)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(labels))], labels, rotation=20)
    ax.set(title=title, ylabel=ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _image(md: list[str], path: Path | None, out: Path) -> None:
    if path is not None:
        md.append(f"![{path.stem}]({path.relative_to(out).as_posix()})\n")


def _device_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    rows = derive(device_dir)
    perf = list(rf.latest_by_key(rf.read_jsonl(device_dir / rf.PERF_FILE)).values())
    errors = [r for r in perf if r.get("status") != "ok"]
    env = rf.read_jsonl(device_dir / rf.ENVIRONMENT_FILE)
    md = [f"## {device_dir.name}\n"]
    notes = device_dir / NOTES_FILE
    if notes.is_file():  # how and when these numbers were taken, written by whoever ran them
        md.append(notes.read_text().strip() + "\n")
    if env:
        last = env[-1]
        device = last.get("device_info") or {}
        md.append(
            f"GPU: {device.get('gpu') or 'none'} · driver {device.get('driver') or '–'} · CUDA "
            f"{device.get('cuda') or '–'} · CPU {device.get('cpu')} ({device.get('cpu_count')} cores) · "
            f"build manifest {last.get('manifest_hash') or '–'} · "
            + ", ".join(f"{k} {v}" for k, v in sorted(last.get("packages", {}).items()))
            + "\n"
        )
    md.append(f"{len(perf) - len(errors)} configurations measured, {len(errors)} failed.\n")
    plots.mkdir(parents=True, exist_ok=True)
    for (model, runtime, target), group in sorted(_group(rows, ("model", "runtime", "target")).items()):
        tag = f"{model}_{runtime}_{target}"
        md.append(f"### {model} · {runtime} · {target}\n")
        seq = _pick([r["seq_len"] for r in group], 128)
        batch = _pick([r["batch_size"] for r in group], 1)
        conc = min(r["concurrency"] for r in group)
        at_seq = [r for r in group if r["seq_len"] == seq and r["concurrency"] == conc]
        at_batch = [r for r in group if r["batch_size"] == batch and r["concurrency"] == conc]
        _image(
            md,
            _line_plot(
                at_seq,
                "batch_size",
                "latency_p50_ms",
                "precision",
                f"{model} p50 latency vs batch (seq {seq}, concurrency {conc})",
                "batch size",
                "p50 latency (ms)",
                plots / f"latency_vs_batch_{tag}.png",
                log_x=True,
            ),
            out,
        )
        _image(
            md,
            _line_plot(
                at_batch,
                "seq_len",
                "latency_p50_ms",
                "precision",
                f"{model} p50 latency vs sequence (batch {batch}, concurrency {conc})",
                "sequence length",
                "p50 latency (ms)",
                plots / f"latency_vs_seq_{tag}.png",
                log_x=True,
            ),
            out,
        )
        at_point = [r for r in group if r["seq_len"] == seq and r["batch_size"] == batch]
        _image(
            md,
            _line_plot(
                at_point,
                "concurrency",
                "throughput",
                "precision",
                f"{model} throughput vs concurrency (batch {batch}, seq {seq})",
                "concurrency",
                "throughput (infer/s)",
                plots / f"throughput_vs_concurrency_{tag}.png",
            ),
            out,
        )
        for precision in PRECISION_ORDER:
            chosen = [r for r in group if r["precision"] == precision and r["concurrency"] == conc]
            _image(
                md,
                _heatmap(
                    chosen, "speedup_vs_cpu", f"{model} {precision}: speedup over CPU FP32", plots / f"speedup_vs_cpu_{tag}_{precision}.png"
                ),
                out,
            )
        md.append(
            _table(
                ["precision", "batch", "seq", "conc", "p50 ms", "infer/s", "× CPU fp32", "× fp32", "size MiB", "size saved vs fp32"],
                (
                    [
                        r["precision"],
                        r["batch_size"],
                        r["seq_len"],
                        r["concurrency"],
                        r["latency_p50_ms"],
                        r["throughput"],
                        r["speedup_vs_cpu"],
                        r["speedup_vs_fp32"],
                        r["file_size_mib"],
                        r["memory_reduction_file_size"],
                    ]
                    for r in sorted(
                        group, key=lambda r: (PRECISION_ORDER.index(r["precision"]), r["batch_size"], r["seq_len"], r["concurrency"])
                    )
                ),
            )
            + "\n"
        )
    engines = [r for r in rf.latest_by_key(rf.read_jsonl(device_dir / rf.ENGINES_FILE)).values() if r.get("status") == "ok"]
    if engines:
        engines.sort(key=lambda r: (r["model"], r["runtime"], PRECISION_ORDER.index(r["precision"])))
        labels = [r["key"] for r in engines]
        md.append("### Engine memory\n")
        _image(
            md,
            _bars(
                labels,
                {"file MiB": [r.get("file_size_mib") for r in engines], "GPU MiB": [r.get("gpu_memory_mib") for r in engines]},
                "engine size and GPU memory",
                "MiB",
                plots / "memory.png",
            ),
            out,
        )
        md.append(
            _table(["engine", "file MiB", "GPU MiB"], ([r["key"], r.get("file_size_mib"), r.get("gpu_memory_mib")] for r in engines)) + "\n"
        )
    if errors:
        md.append("### Failed configurations\n")
        md.append(_table(["configuration", "error"], ([r["key"], str(r.get("error", ""))[-200:]] for r in errors)) + "\n")
    md.extend(grid_section(device_dir, out, plots, _table, _heatmap, _image))
    md.extend(_fidelity_section(device_dir, out, plots))
    return md


def _group(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[k] for k in keys)].append(row)
    return groups


def read_fidelity(device_dir: Path) -> list[dict[str, Any]]:
    """Records of every ``fidelity*.json`` (a list, ``{"records": [...]}`` or one record); [] if none."""
    records: list[dict[str, Any]] = []
    for path in sorted(device_dir.glob("fidelity*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        found = data.get("records", [data]) if isinstance(data, dict) else data
        records += [r for r in found if isinstance(r, dict) and "precision" in r]
    return records


def _fidelity_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    records = read_fidelity(device_dir)
    if not records:
        return []

    def metric(record: dict[str, Any], name: str) -> float | None:
        value = (record.get("metrics") or {}).get(name, record.get(name))
        return float(value) if isinstance(value, int | float) else None

    records.sort(key=lambda r: (str(r.get("model")), PRECISION_ORDER.index(r["precision"]) if r["precision"] in PRECISION_ORDER else 99))
    labels = [f"{r.get('model', '?')} {r['precision']}" for r in records]
    md = ["### Fidelity\n"]
    _image(
        md,
        _bars(
            labels,
            {"cosine min": [metric(r, "cosine_min") for r in records], "cosine mean": [metric(r, "cosine_mean") for r in records]},
            "fidelity vs precision",
            "cosine similarity",
            plots / "fidelity.png",
        ),
        out,
    )
    md.append(
        _table(
            ["model", "precision", "cosine min", "cosine mean", "NaN rate", "Inf rate"],
            (
                [
                    r.get("model"),
                    r["precision"],
                    metric(r, "cosine_min"),
                    metric(r, "cosine_mean"),
                    metric(r, "nan_rate"),
                    metric(r, "inf_rate"),
                ]
                for r in records
            ),
        )
        + "\n"
    )
    return md


def _cross_device(device_dirs: list[Path]) -> list[str]:
    by_key: dict[str, dict[str, float | None]] = defaultdict(dict)
    for device_dir in device_dirs:
        for row in derive(device_dir):
            by_key[row["key"]][device_dir.name] = row["latency_p50_ms"]
    shared = {k: v for k, v in by_key.items() if len(v) > 1}
    if not shared:
        return []
    names = [d.name for d in device_dirs]
    return [
        "## Across devices (p50 latency, ms)\n",
        _table(["configuration", *names], ([k, *(v.get(n) for n in names)] for k, v in sorted(shared.items()))) + "\n",
    ]


def write_report(out: Path = Path("results")) -> Path:
    """Write ``out/REPORT.md`` and ``out/plots/<device>/*.png``; return the report's path."""
    out = Path(out)
    device_dirs = list(rf.device_dirs(out))
    md = [
        "# Performance report\n",
        (
            "Latencies are perf_analyzer p50 through Triton (client side); speedups divide the CPU FP32 "
            "ONNX Runtime baseline (engine only, same inputs) or the FP32 engine's p50 by this p50; "
            "memory reductions compare engine sizes (and GPU memory when measured) with FP32.\n"
        ),
    ]
    if not device_dirs:
        md.append(f"No measurements under {out}/<device>/ yet: run `python -m perf sweep` first.\n")
    for device_dir in device_dirs:
        md.extend(_device_section(device_dir, out, out / "plots" / device_dir.name))
    if len(device_dirs) > 1:
        md.extend(_cross_device(device_dirs))
        md.extend(gpu_comparison(device_dirs, _table))
    report = out / "REPORT.md"
    out.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(md))
    return report
