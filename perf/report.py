"""``results/REPORT.md`` and its PNG plots, from every ``results/<device>/`` folder.

Plots (matplotlib, Agg): latency vs batch and vs sequence length per precision, speedup heat maps
(batch x sequence) over the CPU FP32 baseline, throughput vs concurrency, engine size / GPU memory
bars, fidelity per precision (from ``results/*/fidelity*.json`` when present), GPU time by kernel kind
(``experiments_*.json`` kernel profiles), and a cross-device table when more than one device folder exists.
Missing inputs leave their section out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.grid_report import gpu_comparison, grid_section
from perf.plots import PRECISION_ORDER, bars, heatmap, image, line_plot, stacked_bars, table
from perf.sweep import derive

NOTES_FILE = "NOTES.md"


def _pick(values: Iterable[int], preferred: int) -> int:
    ordered = sorted(set(values))
    return preferred if preferred in ordered else ordered[len(ordered) // 2]


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
        image(
            md,
            line_plot(
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
        image(
            md,
            line_plot(
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
        image(
            md,
            line_plot(
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
            image(
                md,
                heatmap(
                    chosen, "speedup_vs_cpu", f"{model} {precision}: speedup over CPU FP32", plots / f"speedup_vs_cpu_{tag}_{precision}.png"
                ),
                out,
            )
        md.append(
            table(
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
        image(
            md,
            bars(
                labels,
                {"file MiB": [r.get("file_size_mib") for r in engines], "GPU MiB": [r.get("gpu_memory_mib") for r in engines]},
                "engine size and GPU memory",
                "MiB",
                plots / "memory.png",
            ),
            out,
        )
        md.append(
            table(["engine", "file MiB", "GPU MiB"], ([r["key"], r.get("file_size_mib"), r.get("gpu_memory_mib")] for r in engines)) + "\n"
        )
    if errors:
        md.append("### Failed configurations\n")
        md.append(table(["configuration", "error"], ([r["key"], str(r.get("error", ""))[-200:]] for r in errors)) + "\n")
    md.extend(_hops_section(perf, out, plots))
    md.extend(grid_section(device_dir, out, plots))
    md.extend(_kernel_section(device_dir, out, plots))
    md.extend(_fidelity_section(device_dir, out, plots))
    return md


def request_breakdown(record: dict[str, Any]) -> dict[str, float] | None:
    """An ensemble record's average request split into where it went (ms): gRPC and client (perf_analyzer's
    send, network and receive), each step's queue and compute (Triton's statistics), and the ensemble's own
    time between its steps. None without per-model statistics (``hops``)."""
    hops, metrics = record.get("hops") or {}, record.get("metrics") or {}
    ensemble = hops.get(record["triton_model"])
    if ensemble is None:
        return None
    parts = {"gRPC and client": sum(metrics.get(k, 0.0) for k in ("client_send", "network_server_send_recv", "client_recv"))}
    steps = 0.0
    for name, hop in sorted(hops.items(), key=lambda item: not item[0].endswith("_tokenizer")):  # tokenizer first
        if name == record["triton_model"]:
            continue
        role = "tokenizer" if name.endswith("_tokenizer") else "engine"
        compute = hop["compute_input_us"] + hop["compute_infer_us"] + hop["compute_output_us"]
        parts[f"{role} queue"] = hop["queue_us"] / 1000.0
        parts[f"{role} compute"] = compute / 1000.0
        steps += hop["request_us"]
    parts["ensemble between steps"] = max(0.0, (ensemble["request_us"] - steps) / 1000.0)
    return parts


def _hops_section(perf: list[dict[str, Any]], out: Path, plots: Path, batch: int = 1, seq: int = 128) -> list[str]:
    chosen = [
        r
        for r in perf
        if r.get("status") == "ok"
        and r["target"] == "ensemble"
        and r["batch_size"] == batch
        and r["seq_len"] == seq
        and r["concurrency"] == 1
    ]
    rows = [(r, parts) for r in sorted(chosen, key=lambda r: r["key"]) if (parts := request_breakdown(r)) is not None]
    if not rows:
        return []
    names = list(dict.fromkeys(name for _, parts in rows for name in parts))
    md = [
        f"### Where a request's time goes (text ensembles, batch {batch}, sequence {seq}, concurrency 1)\n",
        "Averages over each perf_analyzer run, in ms: gRPC and client from its CSV, each step's queue and compute "
        "(input, infer, output) from Triton's per-model statistics, and the ensemble's own time between its steps "
        "(its end-to-end time less its steps'). The p50 beside them is the run's median.\n",
    ]
    labels = [r["triton_model"] for r, _ in rows]
    series = {name: [parts.get(name, 0.0) for _, parts in rows] for name in names}
    image(
        md,
        stacked_bars(labels, series, f"average request at b{batch} s{seq} c1", "ms", plots / f"request_breakdown_b{batch}_s{seq}.png"),
        out,
    )
    md.append(
        table(
            ["ensemble", "p50 ms", *names],
            ([r["triton_model"], r["metrics"].get("latency_p50"), *(parts.get(n) for n in names)] for r, parts in rows),
        )
        + "\n"
    )
    return md


def kernel_profiles(device_dir: Path) -> list[dict[str, Any]]:
    """One row per (model, shape, mode) of the ``kernel_profile`` experiments (``scripts/gpu_experiments.py``)
    in ``<device>/experiments_*.json``; the first files profiled one shape, with its ``shape`` beside the modes."""
    rows: list[dict[str, Any]] = []
    for path in sorted(device_dir.glob("experiments_*.json")):
        record = json.loads(path.read_text())
        profile = record.get("kernel_profile")
        if not isinstance(profile, dict) or "status" in profile:
            continue
        if "shape" in profile:
            batch, seq = profile["shape"]
            shapes = {f"b{batch}_s{seq}": profile}
        else:
            shapes = {k: v for k, v in profile.items() if isinstance(v, dict)}
        for shape, modes in shapes.items():
            for mode in ("graph_replay", "no_graph"):
                if isinstance(modes.get(mode), dict):
                    rows.append({"model": record.get("model"), "code": record.get("code"), "shape": shape, "mode": mode, **modes[mode]})
    return rows


def _kernel_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    rows = kernel_profiles(device_dir)
    if not rows:
        return []
    md = [
        "### Where the GPU time of one FP16 run goes (kernel profiles)\n",
        'CUPTI through torch.profiler over ONNX Runtime\'s CUDA runs; µs per run. "between" is the wall time of a run '
        "less the time kernels were busy: launch gaps, most of which a CUDA graph replay removes.\n",
    ]
    labels = [f"{r['model']} {r['shape']} {r['mode'].replace('_', ' ')}" for r in rows]
    us = [{kind: float(entry.get("us_per_run", 0.0)) for kind, entry in (r.get("by_kind") or {}).items()} for r in rows]
    # The kinds the experiments script classified kernels into, biggest first.
    kinds = sorted({kind for per_kind in us for kind in per_kind}, key=lambda kind: -sum(per_kind.get(kind, 0.0) for per_kind in us))
    series = {kind: [per_kind.get(kind, 0.0) for per_kind in us] for kind in kinds}
    series["between kernels"] = [max(0.0, float(r.get("between_kernels_us", 0.0))) for r in rows]
    for scale, indices in (
        ("short", [i for i, r in enumerate(rows) if r["wall_median_us"] < 5000]),
        ("long", [i for i, r in enumerate(rows) if r["wall_median_us"] >= 5000]),
    ):
        if indices:
            picked = {kind: [values[i] for i in indices] for kind, values in series.items()}
            path = plots / f"kernels_{scale}.png"
            image(md, stacked_bars([labels[i] for i in indices], picked, "GPU time per run by kernel kind", "µs per run", path), out)
    md.append(
        table(
            ["model", "shape", "mode", "code", "wall µs", "kernels", "busy µs", "between µs", *kinds],
            (
                [
                    r["model"],
                    r["shape"],
                    r["mode"],
                    r.get("code"),
                    r.get("wall_median_us"),
                    r.get("kernels_per_run"),
                    r.get("kernel_busy_us"),
                    r.get("between_kernels_us"),
                ]
                + [per_kind.get(kind, 0.0) for kind in kinds]
                for r, per_kind in zip(rows, us, strict=True)
            ),
        )
        + "\n"
    )
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
    image(
        md,
        bars(
            labels,
            {"cosine min": [metric(r, "cosine_min") for r in records], "cosine mean": [metric(r, "cosine_mean") for r in records]},
            "fidelity vs precision",
            "cosine similarity",
            plots / "fidelity.png",
        ),
        out,
    )
    md.append(
        table(
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
        table(["configuration", *names], ([k, *(v.get(n) for n in names)] for k, v in sorted(shared.items()))) + "\n",
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
        md.extend(gpu_comparison(device_dirs))
    report = out / "REPORT.md"
    out.mkdir(parents=True, exist_ok=True)
    report.write_text("\n".join(md))
    return report
