"""The serving-under-load targets (issue 19) checked against one device folder's load sweeps (``load.jsonl``) and
serving-config searches (``tune.jsonl``): each number from one measured level, named with its code and run.

- throughput: the most requests/s of a level whose p99 kept the budget, with no failed request (any serving path or
  configuration measured), against the wanted requests/s per model;
- serving efficiency at that best level (served sequences/s over the engine alone at the batch the server formed,
  ``perf.load_report.served_efficiency``);
- stability: the latest sweep's levels that reached perf_analyzer's window, and those that gave no measurement;
- latency at one client: the lowest p50 of a one-client level;
- the soak: failed requests, the server's memory under steady load per model (``perf.load.steady_memory``), and
  whether the server served after clients gave up mid-request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.load_report import Medians, cores_busy, engine_medians, load_points, load_soaks, served_efficiency, stub_round_trip_us
from perf.plots import table
from perf.records import TuneTrial
from perf.targets import Target
from perf.tune import TUNE_FILE

P99_BUDGET_MS = 20.0
THROUGHPUT = {"minilm": 12_000.0, "bert-base-uncased": 8_000.0}  # requests/s, FP16, single texts of 128 tokens
EFFICIENCY_MODEL, EFFICIENCY = "bert-base-uncased", 0.75
LATENCY_MODEL, LATENCY_MS = "bert-base-uncased", 1.5
MEMORY_GROWTH, SOAK_REQUESTS = 0.05, 100_000


@dataclass(frozen=True)
class Level:
    """One measured level of FP16 single texts of 128 tokens, from a load sweep or a configuration a search tried."""

    model: str
    served: str  # the Triton model, or the search's build flags
    concurrency: int
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    failures: int
    batches: dict[str, float] | None
    source: str  # "load <run> @<code>" or "tune <run> @<code>"
    steps: dict[str, dict[str, float]] | None = None  # the Python steps' phase times (perf.server_stats.step_times)
    hops: dict[str, dict[str, float]] | None = None  # Triton's statistics per model (perf.server_stats.hop_times)
    cpu: dict[str, Any] | None = None  # perf.processes.CpuMeter
    outside_ms: float | None = None  # perf_analyzer's gRPC, network and client send/receive per request

    def efficiency(self, medians: Medians) -> float | None:
        return served_efficiency(medians, self.model, "fp16", 128, self.batches, self.requests_per_s, 1)[1]

    def within(self, budget_ms: float) -> bool:
        return self.p99_ms is not None and self.p99_ms <= budget_ms and not self.failures


def measured_levels(device_dir: Path) -> list[Level]:
    """Every FP16 single-text level of 128 tokens that gave a measurement, from both files."""
    levels = [
        Level(p.model, p.triton_model, p.concurrency, p.requests_per_s or 0.0, p.metric("latency_p50"), p.metric("latency_p99"), p.failures,
              p.batches, f"load {p.run_id} @{p.code}", p.steps, p.hops, p.cpu, _outside_ms(p.metrics or {}))
        for p in load_points(device_dir)
        if p.precision == "fp16" and p.texts == 1 and p.seq_len == 128 and not p.gpus[1:]
    ]  # fmt: skip
    for trial in rf.read_records(device_dir / TUNE_FILE, TuneTrial):
        for level in trial.levels if trial.precision == "fp16" else []:
            if level.get("status") == "ok" and level.get("texts", 1) == 1 and level.get("seq_len", 128) == 128:
                levels.append(Level(trial.model, f"`{trial.flags}`", level["concurrency"], level.get("requests_per_s") or 0.0, level.get("p50_ms"),
                                    level.get("p99_ms"), level.get("failures") or 0, level.get("batches"), f"tune {trial.run_id} @{trial.code}",
                                    level.get("steps"), level.get("hops"), level.get("cpu")))  # fmt: skip
    return levels


def _outside_ms(metrics: dict[str, float]) -> float | None:
    parts = [metrics.get(name) for name in ("network_server_send_recv", "client_send", "client_recv")]
    return None if parts[0] is None else sum(part or 0.0 for part in parts)


def best_within(levels: Sequence[Level], model: str, budget_ms: float = P99_BUDGET_MS) -> Level | None:
    kept = [level for level in levels if level.model == model and level.within(budget_ms)]
    return max(kept, key=lambda level: level.requests_per_s, default=None)


MAIN_PHASES = ("tokenize", "engine", "upload", "respond", "pack", "gather")


def bound(level: Level) -> str:
    """Where the level's time went, from what it recorded: per Python step, rows per execute, the execute and its
    largest phases, and the stub's round trip beyond it; the host's cores busy. Empty when it recorded none."""
    parts = []
    for model, step in sorted((level.steps or {}).items()):
        executions = step.get("executions") or 0.0
        if not executions:
            continue
        phases = ", ".join(f"{phase} {step[f'{phase}_us'] / 1000:.2f}" for phase in MAIN_PHASES if f"{phase}_us" in step)
        text = f"{model.rsplit('_', 1)[-1]} step: {step['rows'] / executions:.1f} rows per execute of {step['execute_us'] / 1000:.2f} ms ({phases})"
        round_trip = stub_round_trip_us(step, (level.hops or {}).get(model))
        parts.append(text + (f", stub round trip {round_trip / 1000:.2f} ms" if round_trip is not None else ""))
    busy = cores_busy(level.cpu or {})
    if busy is not None:
        parts.append(f"host cores {busy:.0%} busy")
    return "; ".join(parts)


def _with_bound(target: Target, level: Level | None, levels: Sequence[Level] = ()) -> Target:
    """``target`` with what bounds it appended to its measurement, when it is missed: from ``level``'s records, else
    from the best level within the budget of the same model that recorded its steps (named)."""
    if level is None or target.met is not False:
        return target
    why = bound(level)
    if not why:
        recorded = best_within([lv for lv in levels if lv.steps], level.model)
        why = f"{bound(recorded)} (at {_where(recorded)})" if recorded is not None and bound(recorded) else ""
    return Target(target.name, target.wanted, f"{target.measured}. Bound: {why}", target.met) if why else target


def _where(level: Level) -> str:
    p99 = f"p99 {level.p99_ms:.1f} ms" if level.p99_ms is not None else "p99 –"
    return f"{level.requests_per_s:,.0f} req/s, {p99}, {level.concurrency} clients, {level.served} ({level.source})"


def _throughput(levels: list[Level], model: str, wanted: float) -> Target:
    best = best_within(levels, model)
    name = f"{model} FP16 single texts: requests/s with p99 <= {P99_BUDGET_MS:g} ms"
    if best is None:
        return Target(name, f">= {wanted:,.0f}", "no level within the budget", None if not any(lv.model == model for lv in levels) else False)
    return _with_bound(Target(name, f">= {wanted:,.0f}", _where(best), best.requests_per_s >= wanted), best, levels)


def _efficiency(levels: list[Level], medians: Medians) -> Target:
    best = best_within(levels, EFFICIENCY_MODEL)
    ratio = best.efficiency(medians) if best else None
    name = f"serving efficiency of {EFFICIENCY_MODEL} FP16 at its best level within the budget"
    if best is None or ratio is None:
        return Target(name, f">= {EFFICIENCY:.0%}", "not measured (no best level, or no engine grid beside it)", None)
    return _with_bound(Target(name, f">= {EFFICIENCY:.0%}", f"{ratio:.0%} at {_where(best)}", ratio >= EFFICIENCY), best, levels)


def _latency(levels: list[Level]) -> Target:
    ones = [level for level in levels if level.model == LATENCY_MODEL and level.concurrency == 1 and level.p50_ms is not None]
    best = min(ones, key=lambda level: level.p50_ms or 0.0, default=None)
    name = f"{LATENCY_MODEL} FP16 b1 s128, 1 client: p50 end to end"
    if best is None or best.p50_ms is None:
        return Target(name, f"<= {LATENCY_MS:g} ms", "not measured", None)
    outside = best.outside_ms
    client = f", of which {outside:.2f} ms gRPC and client send/receive (perf_analyzer's mean)" if outside is not None else ""
    target = Target(name, f"<= {LATENCY_MS:g} ms", f"{best.p50_ms:.2f} ms{client}, {best.served} ({best.source})", best.p50_ms <= LATENCY_MS)
    return _with_bound(target, best)


def _stability(device_dir: Path) -> Target:
    soaks = load_soaks(device_dir)
    name = "stable under load: levels of the latest sweep that reached perf_analyzer's window (10%)"
    if not soaks:
        return Target(name, "all", "no sweep", None)
    last = soaks[-1]
    measured = last.levels - last.errors
    text = f"{measured - last.unstable} of {last.levels} stable, {last.errors} gave no measurement (run {last.run_id} @{last.code})"
    return Target(name, "all", text, last.unstable == 0 and last.errors == 0)


def _soak(device_dir: Path) -> Target:
    from perf.load_report import steady_rows

    soaks = load_soaks(device_dir)
    name = f"soak: failed requests; memory growth per model over >= {SOAK_REQUESTS:,} requests after its warm-up; served after clients left"
    if not soaks:
        return Target(name, f"0; < {MEMORY_GROWTH:.0%}; yes", "no sweep", None)
    last = soaks[-1]
    steady = [row for row in steady_rows(device_dir, last) if row[1] >= SOAK_REQUESTS]
    worst = max((row[4] for row in steady), default=None)
    served = (last.disconnect or {}).get("served_after")
    growth = "not measured" if worst is None else f"{worst:.1%} (worst of {len(steady)} models)"
    text = f"{last.failures} of {last.requests:,} failed; {growth}; {served} (run {last.run_id} @{last.code})"
    met = None if worst is None else (last.failures == 0 and worst < MEMORY_GROWTH and served is True)
    return Target(name, f"0; < {MEMORY_GROWTH:.0%}; yes", text, met)


def evaluate_load(device_dir: Path) -> list[Target]:
    """Issue 19's targets for one device folder; empty when it has no load sweep nor search."""
    levels = measured_levels(device_dir)
    if not levels and not load_soaks(device_dir):
        return []
    medians = engine_medians(device_dir)
    return [
        *(_throughput(levels, model, wanted) for model, wanted in THROUGHPUT.items()),
        _efficiency(levels, medians),
        _stability(device_dir),
        _latency(levels),
        _soak(device_dir),
    ]


def load_targets_section(device_dir: Path) -> list[str]:
    targets = evaluate_load(device_dir)
    if not targets:
        return []
    rows: list[list[Any]] = [[t.name, t.wanted, t.measured, t.verdict] for t in targets]
    return [
        "### Serving targets (issue 19): the best measured level of every sweep and search in this folder\n",
        "Each row names the level it comes from (served model or configuration, run and code); throughput counts levels "
        "whose p99 kept the budget and that failed no request.\n",
        table(["target", "wanted", "measured", "met"], rows) + "\n",
    ]
