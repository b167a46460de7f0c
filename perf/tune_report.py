"""Report section of ``tune.jsonl`` (``python -m perf tune``): every serving configuration each search tried, its
levels (requests/s and p99 per concurrency) and its score (the best requests/s among levels within the p99
budget), the search's best first. ``perf.report`` places it."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.plots import table
from perf.records import TuneTrial
from perf.tune import TUNE_FILE


def _levels(trial: TuneTrial) -> str:
    cells = []
    for level in trial.levels:
        if level.get("status") != "ok":
            cells.append(f"c{level['concurrency']}: error")
            continue
        p99 = level.get("p99_ms")
        cells.append(
            f"c{level['concurrency']}: {level.get('requests_per_s') or 0:.0f}, {p99:.1f}" if p99 else f"c{level['concurrency']}: –"
        )
    return "; ".join(cells)


def _row(trial: TuneTrial) -> list[Any]:
    rounds = f" (mean of {', '.join(f'{r:.0f}' for r in trial.round_scores)})" if trial.round_scores else ""
    return [f"`{trial.flags}`" + (" **best**" if trial.best and trial.score > 0 else ""), _levels(trial), f"{trial.score:.0f}{rounds}"]


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
        "whose p99 kept the budget (0: none did), the mean over measurements where the two best were measured again.\n",
    ]
    for (run_id, model, precision, budget), trials in searches.items():
        code = trials[0].code or "?"
        md.append(f"**{model} {precision}, p99 budget {budget:g} ms** (run {run_id}, code `{code}`)\n")
        ranked = sorted(trials, key=lambda t: -t.score)
        md.append(table(["configuration", "levels (clients: requests/s, p99 ms)", "score"], (_row(t) for t in ranked)) + "\n")
    return md
