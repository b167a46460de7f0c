"""The GPU targets (BERT-base latency engine-only and through Triton, speedups over the CPU and FP32, memory,
hybrid fidelity) checked against one device folder's records: each ratio from one run.

Reads ``<device>/grid.jsonl`` (engine-only grid, CPU baseline, memory, and the hybrid engines' fidelity
against FP32; ``perf.engine_grid``) and ``<device>/perf.jsonl`` (perf_analyzer through Triton; ``perf.sweep``).
A target whose numbers are missing says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from perf import results as rf
from perf.plots import table
from perf.records import (
    GridCpuBaseline,
    GridEnginePoint,
    GridEnvironment,
    GridMeasurement,
    GridMemory,
    GridRecord,
    PerfPoint,
    SweepConfig,
    Timed,
)
from toolkit.runtimes import DEFAULT_RUNTIME

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


def latest_run(records: list[GridRecord]) -> list[GridRecord]:
    """Records of the last grid run in the file (ratios must not mix runs)."""
    runs = [r.run_id for r in records if isinstance(r, GridEnvironment)]
    return [r for r in records if r.run_id == runs[-1]] if runs else records


@dataclass(frozen=True)
class GridRun:
    """The successful records of a device folder's last grid run, found by what they measured."""

    engines: dict[tuple[str, str, int, int], GridEnginePoint]  # by model, precision, batch, length
    cpu_baselines: dict[tuple[str, int, int], GridCpuBaseline]  # by model, batch, length
    memory: dict[tuple[str, str], GridMemory]  # by model, precision

    @classmethod
    def read(cls, device_dir: Path, file: str = rf.GRID_FILE, last_run_only: bool = True) -> GridRun:
        """The last run of ``<device_dir>/<file>`` (the paper's grid by default), or with ``last_run_only=False``
        every run: either way a later record of the same key replaces an earlier one."""
        records = rf.read_grid(device_dir / file)
        measured = [r for r in (latest_run(records) if last_run_only else records) if isinstance(r, GridMeasurement) and r.ok]
        latest = list(rf.latest_by_key(measured).values())
        return cls(
            engines={(r.model, r.precision, r.batch_size, r.seq_len): r for r in latest if isinstance(r, GridEnginePoint)},
            cpu_baselines={(r.model, r.batch_size, r.seq_len): r for r in latest if isinstance(r, GridCpuBaseline)},
            memory={(r.model, r.precision): r for r in latest if isinstance(r, GridMemory)},
        )

    def engine(self, model: str, precision: str, batch: int, seq: int) -> GridEnginePoint | None:
        return self.engines.get((model, precision, batch, seq))

    def cpu_baseline(self, model: str, batch: int, seq: int) -> GridCpuBaseline | None:
        return self.cpu_baselines.get((model, batch, seq))

    def gpu_memory_mib(self, model: str, precision: str) -> float | None:
        found = self.memory.get((model, precision))
        return None if found is None else found.gpu_memory_mib

    def shapes(self) -> list[tuple[str, int, int]]:
        """(model, batch, length) of every engine or CPU point, sorted."""
        engines = {(model, batch, seq) for model, _, batch, seq in self.engines}
        return sorted(engines | set(self.cpu_baselines))


def median_ms(record: Timed | None) -> float | None:
    """A timed record's median, None when there is no record."""
    return None if record is None else record.median_ms


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, None when either is missing or the denominator is 0."""
    return None if numerator is None or not denominator else numerator / denominator


def _fmt(value: float | None, spec: str = ".3f", unit: str = "") -> str:
    return "–" if value is None else f"{value:{spec}}{unit}"


def evaluate(device_dir: Path, model: str = MODEL) -> list[Target]:
    """Every target for ``model`` (BERT-base) on the device of ``device_dir``."""
    run = GridRun.read(device_dir)
    return [
        _engine_latency(run, model),
        _served_latency(device_dir, model),
        _cpu_speedup(run, model),
        _fp16_speedup(run, model),
        _memory_saving(run, model),
        _hybrid_fidelity(run),
        _hybrid_cost(run, model),
    ]


def _engine_latency(run: GridRun, model: str) -> Target:
    point = run.engine(model, "fp16", 1, 128)
    fp16 = median_ms(point)
    graph = " (CUDA graph)" if point is not None and point.cuda_graph else ""
    return Target(
        "BERT-base FP16 engine-only, b1 s128", "<= 1.0 ms", _fmt(fp16, ".3f", " ms") + graph, None if fp16 is None else fp16 <= 1.0
    )


def _served_latency(device_dir: Path, model: str) -> Target:
    """The last successful run of the FP16 text ensemble at b1 s128 c1 through Triton."""
    point = SweepConfig(model, "fp16", DEFAULT_RUNTIME, "ensemble", 1, 128, 1)
    served = [r for r in rf.read_records(device_dir / rf.PERF_FILE, PerfPoint) if r.ok and r.config == point]
    p50 = served[-1].metric("latency_p50") if served else None
    return Target(
        "through Triton: ensemble with tokenizer, gRPC, c1, BERT-base FP16 b1 s128 p50",
        "<= 2 ms",
        _fmt(p50, ".2f", " ms"),
        None if p50 is None else p50 <= 2.0,
    )


def _cpu_speedup(run: GridRun, model: str) -> Target:
    cpu, fp16 = median_ms(run.cpu_baseline(model, 1, 128)), median_ms(run.engine(model, "fp16", 1, 128))
    speedup = ratio(cpu, fp16)
    return Target(
        "speedup over the CPU FP32 baseline, b1 s128, engine-only",
        ">= 50x",
        f"{_fmt(cpu, '.2f')} / {_fmt(fp16)} ms = {_fmt(speedup, '.0f', 'x')}",
        None if speedup is None else speedup >= 50,
    )


def _fp16_speedup(run: GridRun, model: str) -> Target:
    fp32, fp16 = median_ms(run.engine(model, "fp32", 32, 512)), median_ms(run.engine(model, "fp16", 32, 512))
    speedup = ratio(fp32, fp16)
    return Target(
        "FP16 over FP32, b32 s512",
        ">= 2x",
        f"{_fmt(fp32, '.2f')} / {_fmt(fp16, '.2f')} ms = {_fmt(speedup, '.1f', 'x')}",
        None if speedup is None else speedup >= 2,
    )


def _memory_saving(run: GridRun, model: str) -> Target:
    memory = {p: run.gpu_memory_mib(model, p) for p in ("fp32", "fp16", "hybrid")}
    shares = {p: ratio(memory[p], memory["fp32"]) for p in ("fp16", "hybrid")}
    cuts = {p: None if share is None else 1 - share for p, share in shares.items()}
    measured = (
        ", ".join(f"{p} {_fmt(memory[p], '.0f')} MiB" for p in memory)
        + " -> "
        + ", ".join(f"{p} {_fmt(c and 100 * c, '.0f', '%')} less" for p, c in cuts.items())
    )
    met = None if None in cuts.values() else all(c is not None and c >= 0.40 for c in cuts.values())
    return Target("GPU memory of FP16 and hybrid engines vs FP32 (BERT-base, largest shape)", ">= 40% less", measured, met)


def _compared_hybrid(run: GridRun) -> list[GridEnginePoint]:
    """Every hybrid grid point compared with FP32, of every model."""
    return [r for r in run.engines.values() if r.precision == "hybrid" and r.cosine_min is not None]


def _hybrid_fidelity(run: GridRun) -> Target:
    hybrid = _compared_hybrid(run)
    worst = min((r.cosine_min for r in hybrid if r.cosine_min is not None and not math.isnan(r.cosine_min)), default=None)
    bad = sum((r.nan_count or 0) + (r.inf_count or 0) for r in hybrid)
    models = sorted({r.model for r in hybrid})
    every_point = len(hybrid) == len([r for r in run.engines.values() if r.precision == "fp32"])
    return Target(
        f"hybrid cosine vs FP32 on every configuration ({len(hybrid)} points: {', '.join(models)}), NaN/Inf",
        ">= 0.9998, 0",
        f"min {_fmt(worst, '.7f')}, {bad} NaN/Inf",
        None if worst is None else worst >= 0.9998 and bad == 0 and every_point,
    )


def _hybrid_cost(run: GridRun, model: str) -> Target:
    costs = [ratio(median_ms(r), median_ms(run.engine(r.model, "fp16", r.batch_size, r.seq_len))) for r in _compared_hybrid(run)]
    known = [c for c in costs if c]
    geomean = math.exp(sum(math.log(c) for c in known) / len(known)) if known else None
    small = ratio(median_ms(run.engine(model, "hybrid", 1, 128)), median_ms(run.engine(model, "fp16", 1, 128)))
    big = ratio(median_ms(run.engine(model, "hybrid", 32, 512)), median_ms(run.engine(model, "fp16", 32, 512)))
    return Target(
        "hybrid time over FP16",
        "reported",
        f"BERT-base b1 s128 {_fmt(small, '.2f', 'x')}, b32 s512 {_fmt(big, '.2f', 'x')}; geometric mean over the grid {_fmt(geomean, '.2f', 'x')}",
        None if geomean is None else True,
    )


def targets_markdown(device_dir: Path, model: str = MODEL) -> str:
    """The targets table of one device folder, as Markdown."""
    return (
        table(["target", "wanted", "measured", "met"], ([t.name, t.wanted, t.measured, t.verdict] for t in evaluate(device_dir, model)))
        + "\n"
    )
