"""The GPU targets (BERT-base latency engine-only and through Triton, speedups over the CPU and FP32, memory,
hybrid fidelity) checked against one device folder's records: each ratio from one run.

Reads ``<device>/grid.jsonl`` (engine-only grid, CPU baseline, memory, and the hybrid engines' fidelity
against FP32; ``perf.engine_grid``) and ``<device>/perf.jsonl`` (perf_analyzer through Triton; ``perf.sweep``).
A target whose numbers are missing says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.plots import table

MODEL = "bert-base-uncased"


@dataclass(frozen=True)
class Target:
    """One row of the targets table."""

    name: str
    wanted: str
    measured: str
    met: bool | None  # None: not measured

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "**no**", None: "not run"}[self.met]


def _ok(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("status") == "ok"]


def latest_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records of the last grid run in the file (ratios must not mix runs)."""
    runs = [r.get("run_id") for r in records if r.get("kind") == "environment"]
    return [r for r in records if r.get("run_id") == runs[-1]] if runs else records


def grid_records(device_dir: Path) -> dict[str, dict[str, Any]]:
    """Successful records of the last grid run, by key."""
    return {r["key"]: r for r in _ok(latest_run(rf.read_jsonl(device_dir / rf.GRID_FILE)))}


def _ms(record: dict[str, Any] | None) -> float | None:
    return None if record is None else record.get("median_ms")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def _fmt(value: float | None, spec: str = ".3f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def evaluate(device_dir: Path, model: str = MODEL) -> list[Target]:
    """Every target for ``model`` (BERT-base) on the device of ``device_dir``."""
    grid = grid_records(device_dir)
    engine = {k: r for k, r in grid.items() if r.get("kind") == "engine"}

    def point(precision: str, batch: int, seq: int, kind: str = "") -> dict[str, Any] | None:
        return grid.get(f"{model}|{kind or precision}|b{batch}|s{seq}")

    targets = []
    fp16 = _ms(point("fp16", 1, 128))
    graph = " (CUDA graph)" if (point("fp16", 1, 128) or {}).get("cuda_graph") else ""
    targets.append(
        Target("BERT-base FP16 engine-only, b1 s128", "<= 1.0 ms", _fmt(fp16, ".3f", " ms") + graph, None if fp16 is None else fp16 <= 1.0)
    )

    served = [r for r in _ok(rf.read_jsonl(device_dir / rf.PERF_FILE)) if r.get("key") == f"{model}_fp16|b1|s128|c1"]
    p50 = served[-1]["metrics"].get("latency_p50") if served else None
    targets.append(
        Target(
            "through Triton: ensemble with tokenizer, gRPC, c1, BERT-base FP16 b1 s128 p50",
            "<= 2 ms",
            _fmt(p50, ".2f", " ms"),
            None if p50 is None else p50 <= 2.0,
        )
    )

    cpu = _ms(point("fp32", 1, 128, "cpu_fp32"))
    speedup = _ratio(cpu, fp16)
    targets.append(
        Target(
            "speedup over the CPU FP32 baseline, b1 s128, engine-only",
            ">= 50x",
            f"{_fmt(cpu, '.2f')} / {_fmt(fp16)} ms = {_fmt(speedup, '.0f', 'x')}",
            None if speedup is None else speedup >= 50,
        )
    )

    fp32_big, fp16_big = _ms(point("fp32", 32, 512)), _ms(point("fp16", 32, 512))
    ratio = _ratio(fp32_big, fp16_big)
    targets.append(
        Target(
            "FP16 over FP32, b32 s512",
            ">= 2x",
            f"{_fmt(fp32_big, '.2f')} / {_fmt(fp16_big, '.2f')} ms = {_fmt(ratio, '.1f', 'x')}",
            None if ratio is None else ratio >= 2,
        )
    )

    memory = {p: (grid.get(f"{model}|{p}|memory") or {}).get("gpu_memory_mib") for p in ("fp32", "fp16", "hybrid")}
    cuts = {p: None if memory[p] is None or not memory["fp32"] else 1 - memory[p] / memory["fp32"] for p in ("fp16", "hybrid")}
    measured = (
        ", ".join(f"{p} {_fmt(memory[p], '.0f')} MiB" for p in memory)
        + " -> "
        + ", ".join(f"{p} {_fmt(c and 100 * c, '.0f', '%')} less" for p, c in cuts.items())
    )
    met = None if None in cuts.values() else all(c is not None and c >= 0.40 for c in cuts.values())
    targets.append(Target("GPU memory of FP16 and hybrid engines vs FP32 (BERT-base, largest shape)", ">= 40% less", measured, met))

    hybrid = [r for r in engine.values() if r["precision"] == "hybrid" and "cosine_min" in r]
    worst = min((r["cosine_min"] for r in hybrid if r["cosine_min"] is not None and not math.isnan(r["cosine_min"])), default=None)
    bad = sum(r.get("nan_count", 0) + r.get("inf_count", 0) for r in hybrid)
    models = sorted({r["model"] for r in hybrid})
    targets.append(
        Target(
            f"hybrid cosine vs FP32 on every configuration ({len(hybrid)} points: {', '.join(models)}), NaN/Inf",
            ">= 0.9998, 0",
            f"min {_fmt(worst, '.7f')}, {bad} NaN/Inf",
            None
            if worst is None
            else worst >= 0.9998 and bad == 0 and len(hybrid) == len([r for r in engine.values() if r["precision"] == "fp32"]),
        )
    )

    costs = [_ratio(_ms(r), _ms(engine.get(r["key"].replace("|hybrid|", "|fp16|")))) for r in hybrid]
    known = [c for c in costs if c]
    geomean = math.exp(sum(math.log(c) for c in known) / len(known)) if known else None
    small = _ratio(_ms(point("hybrid", 1, 128)), fp16)
    big = _ratio(_ms(point("hybrid", 32, 512)), fp16_big)
    targets.append(
        Target(
            "hybrid time over FP16",
            "reported",
            f"BERT-base b1 s128 {_fmt(small, '.2f', 'x')}, b32 s512 {_fmt(big, '.2f', 'x')}; geometric mean over the grid {_fmt(geomean, '.2f', 'x')}",
            None if geomean is None else True,
        )
    )
    return targets


def targets_markdown(device_dir: Path, model: str = MODEL) -> str:
    """The targets table of one device folder, as Markdown."""
    return (
        table(["target", "wanted", "measured", "met"], ([t.name, t.wanted, t.measured, t.verdict] for t in evaluate(device_dir, model)))
        + "\n"
    )
