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
from perf.processes import CLIENT, SERVER
from perf.records import LoadPoint, LoadSoak
from perf.targets import GridRun


def load_points(device_dir: Path, ok: bool = True) -> list[LoadPoint]:
    """The latest record of every load level (a re-run replaces an earlier one) that succeeded (``ok``) or failed."""
    rows = [LoadPoint.from_json(r) for r in rf.read_jsonl(device_dir / LOAD_FILE) if "kind" not in r]
    latest = rf.latest_by_key(rows).values()
    return sorted((p for p in latest if p.ok == ok), key=lambda p: (p.triton_model, len(p.gpus), p.texts, p.concurrency))


LEVEL_HEADERS = ["model", "texts", "clients", "requests/s", "p50 ms", "p99 ms", "stable", "batches formed", "engine alone seq/s", "efficiency", "failed", "code"]
STEP_HEADERS = ["model", "clients", "requests/s", "step", "rows/execute", "execute us", "phases us", "beyond execute us", "step CPU ms/request"]


def failed_line(point: LoadPoint) -> str:
    """A level that gave no measurement, with perf_analyzer's own error (first 160 characters)."""
    return f"{point.triton_model} x{point.texts}, {point.concurrency} clients: {(point.error or point.status)[:160]}"


def _failed_levels(device_dir: Path) -> list[str]:
    """One line per level that gave no measurement."""
    failed = load_points(device_dir, ok=False)
    if not failed:
        return []
    return ["Levels that gave no measurement (their latest record):\n", *(f"- {failed_line(p)}" for p in failed), ""]


def load_soaks(device_dir: Path) -> list[LoadSoak]:
    return [LoadSoak.from_json(r) for r in rf.read_jsonl(device_dir / LOAD_FILE) if r.get("kind") == LoadSoak.kind]


Medians = dict[tuple[str, str, int], dict[int, float]]  # {(model, precision, seq): {batch: engine median ms}}


def engine_medians(device_dir: Path) -> Medians:
    """{(model, precision, seq): {batch: engine median ms}}: the latest measurement of each engine in the grids
    run beside the load sweeps (``grid_load.jsonl``: each such run times only the models it served, so every
    run counts), else the paper's grid's last run."""
    medians: Medians = defaultdict(dict)
    beside = (device_dir / rf.LOAD_GRID_FILE).is_file()
    grid = GridRun.read(device_dir, rf.LOAD_GRID_FILE, last_run_only=False) if beside else GridRun.read(device_dir)
    for (model, precision, batch, seq), point in grid.engines.items():
        if point.median_ms:
            medians[(model, precision, seq)][batch] = point.median_ms
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


def efficiency(point: LoadPoint, medians: Medians) -> tuple[float | None, float | None]:
    """(engine-alone sequences/s at the batch the server formed, served sequences/s over it) for one level."""
    return served_efficiency(medians, point.model, point.precision, point.seq_len, point.batches, point.requests_per_s, point.texts)


def served_efficiency(
    medians: Medians, model: str, precision: str, seq_len: int, batches: dict[str, float] | None, requests_per_s: float | None, texts: int
) -> tuple[float | None, float | None]:
    """``efficiency`` from a level's parts (a load point's, or a tuning trial's level)."""
    engine_batch = next((rows for name, rows in (batches or {}).items() if not name.endswith("_tokenizer")), None)
    engine_ms = engine_ms_at(medians.get((model, precision, seq_len), {}), engine_batch or 0.0)
    if not engine_batch or not engine_ms or requests_per_s is None:
        return None, None
    capacity = engine_batch / (engine_ms / 1000.0)
    return capacity, requests_per_s * texts / capacity


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
        "alone does at that batch (this folder's grid, interpolated). `stable`: the level reached the asked stability. "
        "Each level's latest measurement; `code` names the run's code (hosts differ between runs).\n",
    ]
    curves = [(f"{p.triton_model} x{p.texts} g{len(p.gpus)}", p.requests_per_s or 0.0, p.metric("latency_p99")) for p in points]
    plots.mkdir(parents=True, exist_ok=True)
    image(md, line_plot(curves, "throughput against p99", "requests/s", "p99 latency (ms)", plots / "load_throughput_p99.png"), out)
    md.append(table(LEVEL_HEADERS, (_row(p, medians) for p in points)) + "\n")
    md.extend(_failed_levels(device_dir))
    md.extend(_where_time_goes(points))
    md.extend(_scaling(points))
    md.extend(_soak(device_dir))
    return md


STEP_PHASES = ("decode", "tokenize", "pack", "gather", "upload", "engine", "download", "respond")


def stub_round_trip_us(step: dict[str, float], hop: dict[str, float] | None) -> float | None:
    """Triton's compute time for a Python step beyond the step's own execute: the round trip to its stub."""
    infer = (hop or {}).get("compute_infer_us")
    return None if infer is None else infer - step["execute_us"]


def cores_busy(cpu: dict[str, Any]) -> float | None:
    """The share of all the host's cores busy during a level (``perf.processes.CpuMeter``'s record)."""
    return sum(cpu["seconds"].values()) / (cpu["wall_s"] * cpu["cores"]) if cpu.get("wall_s") else None


def step_rows(point: LoadPoint) -> list[list[Any]]:
    """One row per Python step that ran during ``point``: its rows per execute, the execute's time and its phases
    (microseconds per execute), Triton's compute time for it beyond the execute (the stub's round trip), and the CPU
    that step's processes spent per served request."""
    rows = []
    requests = point.requests()
    cpu = (point.cpu or {}).get("seconds", {})
    for model, step in sorted((point.steps or {}).items()):
        phases = ", ".join(f"{phase} {step[f'{phase}_us']:.0f}" for phase in STEP_PHASES if f"{phase}_us" in step)
        beyond = stub_round_trip_us(step, (point.hops or {}).get(model))
        cpu_ms = cpu[model] / requests * 1000.0 if model in cpu and requests else None
        rows.append([
            point.triton_model, point.concurrency, point.requests_per_s, model.rsplit("_", 1)[-1], step["rows"] / step["executions"],
            step["execute_us"], phases, beyond, cpu_ms,
        ])  # fmt: skip
    return rows


def host_rows(point: LoadPoint) -> list[Any] | None:
    """The host's CPU during ``point``: milliseconds per served request of perf_analyzer, of Triton's own process and
    of all Python steps together, and the share of every core that was busy."""
    cpu, requests = point.cpu or {}, point.requests()
    if not cpu or not requests:
        return None
    seconds = cpu["seconds"]
    steps = sum(value for group, value in seconds.items() if group not in (CLIENT, SERVER))
    per = 1000.0 / requests
    return [point.triton_model, point.concurrency, point.requests_per_s, seconds.get(CLIENT, 0.0) * per,
            seconds.get(SERVER, 0.0) * per, steps * per, cores_busy(cpu), cpu["cores"]]  # fmt: skip


def _where_time_goes(points: list[LoadPoint]) -> list[str]:
    steps = [row for point in points for row in step_rows(point)]
    hosts = [row for row in map(host_rows, points) if row]
    md = []
    if steps:
        md += [
            "Where a Python step's time goes (`toolkit_step_*` metrics the steps publish): microseconds per execute in "
            "each phase, and Triton's compute time for the step beyond the execute (the round trip between the server "
            "and the step's stub process); CPU is that step's processes' per served request.\n",
            table(STEP_HEADERS, steps) + "\n",
        ]  # fmt: skip
    if hosts:
        md += [
            "The host's CPU per served request, by process (perf_analyzer on the same host; Triton's process: gRPC, "
            "scheduling, ensembles; the Python steps), and the share of all cores busy during the level:\n",
            table(["model", "clients", "requests/s", "perf_analyzer ms", "tritonserver ms", "Python steps ms", "cores busy", "cores"], hosts) + "\n",
        ]  # fmt: skip
    return md


def run_points(device_dir: Path, run_id: str) -> list[LoadPoint]:
    """Every level of one sweep, in the order it ran."""
    return [LoadPoint.from_json(r) for r in rf.read_jsonl(device_dir / LOAD_FILE) if "kind" not in r and r.get("run_id") == run_id]


def levels_summary(points: list[LoadPoint], device_dir: Path) -> str:
    """The levels of one sweep as terminal tables: each level's numbers, then where its Python steps' time went."""
    medians = engine_medians(device_dir)
    ok = [point for point in points if point.ok]
    levels = table(LEVEL_HEADERS, (_row(point, medians) for point in ok))
    failed = [failed_line(point) for point in points if not point.ok]
    steps = [row for point in ok for row in step_rows(point)]
    return "\n".join([levels, *failed, *([table(STEP_HEADERS, steps)] if steps else [])])


def scaling_rows(points: list[LoadPoint]) -> list[list[Any]]:
    """Per (model, texts, clients): requests/s and p99 on one GPU and on N, and N-GPU / (N x 1-GPU) throughput."""
    by_level: dict[tuple[str, int, int], dict[int, LoadPoint]] = defaultdict(dict)
    for point in points:
        by_level[(point.triton_model, point.texts, point.concurrency)][len(point.gpus)] = point
    rows = []
    for (model, texts, clients), runs in sorted(by_level.items()):
        one = runs.get(1)
        for count, many in sorted(((n, p) for n, p in runs.items() if n > 1), key=lambda item: item[0]):
            ratio = (many.requests_per_s or 0.0) / (count * one.requests_per_s) if one and one.requests_per_s else None
            rows.append([
                model, texts, clients, one.requests_per_s if one else None, one.metric("latency_p99") if one else None,
                count, many.requests_per_s, many.metric("latency_p99"), ratio,
            ])  # fmt: skip
    return rows


def _scaling(points: list[LoadPoint]) -> list[str]:
    rows = scaling_rows(points)
    if not rows:
        return []
    return [
        "GPUs of one host (engine instances on each, `--gpus`): scaling efficiency is N-GPU throughput / (N x 1-GPU "
        "throughput) at the same clients.\n",
        table(["model", "texts", "clients", "1 GPU req/s", "1 GPU p99 ms", "GPUs", "N GPU req/s", "N GPU p99 ms", "scaling efficiency"], rows)
        + "\n",
    ]


def _row(point: LoadPoint, medians: dict[tuple[str, str, int], dict[int, float]]) -> list[Any]:
    capacity, ratio = efficiency(point, medians)
    batches = ", ".join(f"{name.rsplit('_', 1)[-1]} {rows:.1f}" for name, rows in sorted((point.batches or {}).items()))
    return [
        point.triton_model, point.texts, point.concurrency, point.requests_per_s, point.metric("latency_p50"), point.metric("latency_p99"),
        "no" if point.stable is False else "yes", batches, capacity, ratio, point.failures, point.code,
    ]  # fmt: skip


def _soak(device_dir: Path) -> list[str]:
    soaks = load_soaks(device_dir)
    if not soaks:
        return []
    md = [
        "Soak (each sweep): requests the server answered, failed ones, the server's memory (Triton and its Python stubs) "
        "after the first level and at the end, and clients that gave up mid-request:\n",
        table(
            ["run", "requests", "failed", "unstable levels", "RSS first MiB", "RSS last MiB", "growth", "gave up", "served after"],
            ([s.run_id, s.requests, s.failures, s.unstable, s.rss_mib_first, s.rss_mib_last, s.rss_growth,
              (s.disconnect or {}).get("clients_gave_up"), (s.disconnect or {}).get("served_after")] for s in soaks),
        ) + "\n",
    ]  # fmt: skip
    steady = [[soak.run_id, *row] for soak in soaks for row in steady_rows(device_dir, soak)]
    if steady:
        md += [
            "Memory under steady load, per served model: after its first level (its warm-up: the stubs' first GPU work "
            "and CUDA graphs) and after its last, and the requests it answered in between:\n",
            table(["run", "model", "requests", "RSS after first level MiB", "RSS at its end MiB", "growth"], steady) + "\n",
        ]
    return md


def steady_rows(device_dir: Path, soak: LoadSoak) -> list[list[Any]]:
    """The soak's per-model steady memory, computed from its run's levels when the record predates it."""
    from perf.load import steady_memory

    steady = soak.steady
    if steady is None:
        steady = steady_memory(run_points(device_dir, soak.run_id))
    return [[row["model"], row["requests"], row["rss_mib_start"], row["rss_mib_end"], row["growth"]] for row in steady]
