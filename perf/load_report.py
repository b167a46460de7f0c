"""Report section of the load sweeps (``load.jsonl``): throughput against p99 per served model, and the serving
efficiency at each level: served sequences/s against what the engine alone does at the batch the server formed
(the engine's median at that batch, interpolated between the grid's batch sizes at the sweep's length, from the
same device folder's ``grid.jsonl``). ``perf.report`` places it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.load import LOAD_FILE
from perf.plots import image, line_plot, table
from perf.targets import grid_records


def load_points(device_dir: Path) -> list[dict[str, Any]]:
    """The latest successful record of every load level (a re-run replaces an earlier one)."""
    latest = rf.latest_by_key(r for r in rf.read_jsonl(device_dir / LOAD_FILE) if "kind" not in r)
    return sorted((r for r in latest.values() if r.get("status") == "ok"), key=lambda r: (r["triton_model"], r["texts"], r["concurrency"]))


def engine_medians(device_dir: Path) -> dict[tuple[str, str, int], dict[int, float]]:
    """{(model, precision, seq): {batch: engine median ms}} of the last grid run."""
    medians: dict[tuple[str, str, int], dict[int, float]] = defaultdict(dict)
    for record in grid_records(device_dir).values():
        if record.get("kind") == "engine" and record.get("median_ms"):
            medians[(record["model"], record["precision"], record["seq_len"])][record["batch_size"]] = record["median_ms"]
    return medians


def engine_ms_at(batches: dict[int, float], batch: float) -> float | None:
    """The engine's median at ``batch`` rows: log-log interpolation between the grid's batch sizes (the nearest
    end beyond them)."""
    if not batches:
        return None
    sizes = sorted(batches)
    if batch <= sizes[0] or batch >= sizes[-1]:
        return batches[sizes[0] if batch <= sizes[0] else sizes[-1]]
    low = max(size for size in sizes if size <= batch)
    high = min(size for size in sizes if size >= batch)
    if low == high:
        return batches[low]
    weight = (math.log(batch) - math.log(low)) / (math.log(high) - math.log(low))
    return math.exp(math.log(batches[low]) + weight * (math.log(batches[high]) - math.log(batches[low])))


def efficiency(point: dict[str, Any], medians: dict[tuple[str, str, int], dict[int, float]]) -> tuple[float | None, float | None]:
    """(engine-alone sequences/s at the batch the server formed, served sequences/s over it) for one level."""
    engine_batch = next((rows for name, rows in (point.get("batches") or {}).items() if not name.endswith("_tokenizer")), None)
    engine_ms = engine_ms_at(medians.get((point["model"], point["precision"], point["seq_len"]), {}), engine_batch or 0.0)
    if not engine_batch or not engine_ms:
        return None, None
    capacity = engine_batch / (engine_ms / 1000.0)
    served = point["requests_per_s"] * point["texts"]
    return capacity, served / capacity


def load_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    """Throughput against p99 per served model, and the table of every level with its efficiency."""
    points = load_points(device_dir)
    if not points:
        return []
    medians = engine_medians(device_dir)
    md = [
        "### Serving under load (single-text clients)\n",
        "perf_analyzer time windows; requests/s are served requests (a request carries `texts` rows); the batch is the "
        "rows per execution Triton formed for each model; efficiency divides the served sequences/s by what the engine "
        "alone does at that batch (this folder's grid, interpolated). `stable`: the level reached the asked stability.\n",
    ]
    rows = [dict(p, label=f"{p['triton_model']} x{p['texts']}", p99=p["metrics"].get("latency_p99")) for p in points]
    plots.mkdir(parents=True, exist_ok=True)
    image(md, line_plot(rows, "requests_per_s", "p99", "label", "throughput against p99", "requests/s", "p99 latency (ms)",
                        plots / "load_throughput_p99.png"), out)  # fmt: skip
    md.append(table(
        ["model", "texts", "clients", "requests/s", "p50 ms", "p99 ms", "stable", "batches formed", "engine alone seq/s", "efficiency", "failed"],
        (_row(p, medians) for p in points),
    ) + "\n")  # fmt: skip
    md.extend(_scaling(points))
    md.extend(_soak(device_dir))
    return md


def scaling_rows(points: list[dict[str, Any]]) -> list[list[Any]]:
    """Per (model, texts, clients): requests/s and p99 on one GPU and on N, and N-GPU / (N x 1-GPU) throughput."""
    by_level: dict[tuple[str, int, int], dict[int, dict[str, Any]]] = defaultdict(dict)
    for point in points:
        by_level[(point["triton_model"], point["texts"], point["concurrency"])][len(point.get("gpus") or [])] = point
    rows = []
    for (model, texts, clients), runs in sorted(by_level.items()):
        one = runs.get(1)
        for count, many in sorted((n, p) for n, p in runs.items() if n > 1):
            ratio = many["requests_per_s"] / (count * one["requests_per_s"]) if one and one["requests_per_s"] else None
            rows.append([
                model, texts, clients, one["requests_per_s"] if one else None, one["metrics"].get("latency_p99") if one else None,
                count, many["requests_per_s"], many["metrics"].get("latency_p99"), ratio,
            ])  # fmt: skip
    return rows


def _scaling(points: list[dict[str, Any]]) -> list[str]:
    rows = scaling_rows(points)
    if not rows:
        return []
    return [
        "GPUs of one host (engine instances on each, `--gpus`): scaling efficiency is N-GPU throughput / (N x 1-GPU "
        "throughput) at the same clients.\n",
        table(["model", "texts", "clients", "1 GPU req/s", "1 GPU p99 ms", "GPUs", "N GPU req/s", "N GPU p99 ms", "scaling efficiency"], rows)
        + "\n",
    ]


def _row(point: dict[str, Any], medians: dict[tuple[str, str, int], dict[int, float]]) -> list[Any]:
    capacity, ratio = efficiency(point, medians)
    batches = ", ".join(f"{name.rsplit('_', 1)[-1]} {rows:.1f}" for name, rows in sorted((point.get("batches") or {}).items()))
    return [
        point["triton_model"], point["texts"], point["concurrency"], point["requests_per_s"], point["metrics"].get("latency_p50"),
        point["metrics"].get("latency_p99"), "yes" if point.get("stable", True) else "no", batches, capacity, ratio, point.get("failures", 0),
    ]  # fmt: skip


def _soak(device_dir: Path) -> list[str]:
    soaks = [r for r in rf.read_jsonl(device_dir / LOAD_FILE) if r.get("kind") == "soak"]
    if not soaks:
        return []
    return [
        "Soak (each sweep): requests the server answered, failed ones, the server's memory (Triton and its Python stubs) "
        "after the first level and at the end, and clients that gave up mid-request:\n",
        table(
            ["run", "requests", "failed", "unstable levels", "RSS first MiB", "RSS last MiB", "growth", "gave up", "served after"],
            ([s["run_id"], s["requests"], s["failures"], s["unstable"], s["rss_mib_first"], s["rss_mib_last"], s["rss_growth"],
              (s.get("disconnect") or {}).get("clients_gave_up"), (s.get("disconnect") or {}).get("served_after")] for s in soaks),
        ) + "\n",
    ]  # fmt: skip
