"""Report section of ``tune.jsonl`` (``python -m perf tune``): every serving configuration each search tried, its
levels (requests/s, p50, p99 and serving efficiency per concurrency) and its score (the best requests/s among levels
within the p99 budget), the search's best first. ``perf.report`` places it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.load import LOADS
from perf.load_report import Medians, engine_medians, served_efficiency
from perf.plots import table
from perf.records import TuneTrial
from perf.tune import LEVEL_CELLS, TUNE_FILE, level_cell, rounds_note

# Levels recorded before they carried their request shape (the H200's first searches) all used the GPU load plan's.
EARLIER_LEVEL = {"texts": 1, "seq_len": LOADS["load"].seq_len}


def _level(trial: TuneTrial, level: dict[str, Any], medians: Medians) -> str:
    if level.get("status") != "ok":
        return f"c{level['concurrency']}: error"
    cell = level_cell(level["concurrency"], level.get("requests_per_s"), level.get("p50_ms"), level.get("p99_ms"))
    shape = {**EARLIER_LEVEL, **level}
    _, ratio = served_efficiency(
        medians, trial.model, trial.precision, shape["seq_len"], level.get("batches"), level.get("requests_per_s"), shape["texts"]
    )
    return cell + (f", {ratio:.0%}" if ratio is not None else "")


def _row(trial: TuneTrial, medians: Medians) -> list[Any]:
    rounds = rounds_note(trial.round_scores) if trial.round_scores else ""
    levels = "; ".join(_level(trial, level, medians) for level in trial.levels)
    return [f"`{trial.flags}`" + (" **best**" if trial.best and trial.score > 0 else ""), levels, f"{trial.score:.0f}{rounds}"]


def tune_section(device_dir: Path) -> list[str]:
    """One table per search (model, precision, p99 budget), its trials by score."""
    searches: dict[tuple[str, str, str, float], list[TuneTrial]] = defaultdict(list)
    for trial in rf.read_records(device_dir / TUNE_FILE, TuneTrial):
        searches[(trial.run_id, trial.model, trial.precision, trial.p99_budget_ms)].append(trial)
    if not searches:
        return []
    md = [
        "### Serving-config search (`python -m perf tune`)\n",
        "Each configuration applied to the running server (explicit model control) and measured with the load "
        "sweep's single-text levels (the levels shown: its first measurement); score: the highest requests/s among levels "
        "whose p99 kept the budget (0: none did), the mean over measurements where the two best were measured again. "
        "The percentage: serving efficiency, as in the load table (served sequences/s over the engine alone at the batch "
        "the server formed, from this folder's grid).\n",
    ]
    medians = engine_medians(device_dir)
    for (run_id, model, precision, budget), trials in searches.items():
        code = trials[0].code or "?"
        md.append(f"**{model} {precision}, p99 budget {budget:g} ms** (run {run_id}, code `{code}`)\n")
        ranked = sorted(trials, key=lambda t: -t.score)
        headers = ["configuration", f"levels ({LEVEL_CELLS}, efficiency)", "score"]
        md.append(table(headers, (_row(t, medians) for t in ranked)) + "\n")
    return md
