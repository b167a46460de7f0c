"""Report sections from the engine-only grid (``grid.jsonl``): targets, per-model tables and heat maps,
and GPUs side by side. ``perf.report`` places them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf import results as rf
from perf.plots import heatmap, image, table
from perf.records import GridEnginePoint, GridEnvironment
from perf.targets import GridRun, Target, evaluate, median_ms, ratio, targets_markdown

PRECISIONS = ("fp32", "fp16", "hybrid")
# The points every GPU run covers first (those of the targets): compared side by side across GPUs.
KEY_BATCHES, KEY_SEQS = (1, 8, 32), (32, 128, 512)
GRID_HEADERS = [
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
AUTO_HEADERS = ["auto ms", "auto/fp16", "auto cos min", "auto NaN/Inf"]  # where the grid timed an auto variant


@dataclass(frozen=True)
class _Shape:
    """One model's grid points at one (batch, length): each precision's engine and the CPU baseline."""

    batch: int
    seq: int
    engines: dict[str, GridEnginePoint]  # by precision, those measured
    cpu_ms: float | None

    @classmethod
    def of(cls, run: GridRun, model: str, batch: int, seq: int) -> _Shape:
        engines = {p: found for p in (*PRECISIONS, "auto") if (found := run.engine(model, p, batch, seq)) is not None}
        return cls(batch, seq, engines, median_ms(run.cpu_baseline(model, batch, seq)))

    def ms(self, precision: str) -> float | None:
        return median_ms(self.engines.get(precision))

    @property
    def fp16_speedup(self) -> float | None:
        return ratio(self.ms("fp32"), self.ms("fp16"))

    @property
    def hybrid_cost(self) -> float | None:
        return ratio(self.ms("hybrid"), self.ms("fp16"))

    def auto_cells(self) -> list[Any]:
        """The auto variant's cells (``AUTO_HEADERS``): its time, its cost over FP16, its cosine and NaN/Inf."""
        auto = self.engines.get("auto")
        if auto is None:
            return [None, None, None, None]
        cosine = None if auto.cosine_min is None else f"{auto.cosine_min:.7f}"
        return [self.ms("auto"), ratio(self.ms("auto"), self.ms("fp16")), cosine, (auto.nan_count or 0) + (auto.inf_count or 0)]

    def row(self) -> list[Any]:
        """The cells of the grid table's row."""
        hybrid, fp16 = self.engines.get("hybrid"), self.engines.get("fp16")
        cosine = None if hybrid is None else hybrid.cosine_min
        bad = sum((self.engines[p].nan_count or 0) + (self.engines[p].inf_count or 0) for p in ("fp16", "hybrid") if p in self.engines)
        graph = "yes" if fp16 is not None and fp16.cuda_graph else "no"
        fp32_ms, fp16_ms, hybrid_ms = (self.ms(p) for p in PRECISIONS)
        return [
            self.batch,
            self.seq,
            graph,
            fp32_ms,
            fp16_ms,
            hybrid_ms,
            self.fp16_speedup,
            self.hybrid_cost,
            ratio(self.cpu_ms, fp16_ms),
            None if cosine is None else f"{cosine:.7f}",
            bad,
        ]


def grid_section(device_dir: Path, out: Path, plots: Path) -> list[str]:
    """Targets, then per model a table of every grid point and heat maps of the FP16 speedup and hybrid cost."""
    run = GridRun.read(device_dir)
    if not run.shapes():
        return []
    md = ["### Targets (issue #6), engine-only grid and Triton\n", targets_markdown(device_dir)]
    plots.mkdir(parents=True, exist_ok=True)
    for model in sorted({m for m, _, _ in run.shapes()}):
        md.extend(_model_section(run, model, out, plots))
    return md


def grid_environment(device_dir: Path) -> list[str]:
    """One line on the last grid run: its code, machine and packages (the report's provenance)."""
    environments = [r for r in rf.read_grid(device_dir / rf.GRID_FILE) if isinstance(r, GridEnvironment)]
    if not environments:
        return []
    last = environments[-1]
    info = last.device_info
    return [
        f"Grid run {last.run_id} (code {last.code or 'unrecorded'}): GPU {info.get('gpu') or 'none'}, driver {info.get('driver') or '–'}, CUDA "
        f"{info.get('cuda') or '–'}, CPU {info.get('cpu')} ({info.get('cpu_count')} threads); "
        + ", ".join(f"{k} {v}" for k, v in sorted(last.packages.items()))
        + "\n"
    ]


def _model_section(run: GridRun, model: str, out: Path, plots: Path) -> list[str]:
    """One model's heat maps of the FP16 speedup and the hybrid cost, and its table of every shape."""
    shapes = [_Shape.of(run, model, batch, seq) for m, batch, seq in run.shapes() if m == model]
    md = [f"#### {model}: engine-only grid ({len(shapes)} shapes x {len(PRECISIONS)} precisions)\n"]
    speedups = ((s.batch, s.seq, s.fp16_speedup) for s in shapes)
    image(md, heatmap(speedups, f"{model}: FP32 / FP16 time", plots / f"grid_fp16_speedup_{model}.png"), out)
    costs = ((s.batch, s.seq, s.hybrid_cost) for s in shapes)
    image(md, heatmap(costs, f"{model}: hybrid / FP16 time", plots / f"grid_hybrid_cost_{model}.png"), out)
    if any("auto" in s.engines for s in shapes):
        md.append(table([*GRID_HEADERS, *AUTO_HEADERS], ([*s.row(), *s.auto_cells()] for s in shapes)) + "\n")
    else:
        md.append(table(GRID_HEADERS, (s.row() for s in shapes)) + "\n")
    return md


def _gpu_runs(device_dirs: list[Path]) -> dict[str, GridRun]:
    """The engine-only grid of every GPU folder that has one, in the order of ``device_dirs``."""
    measured = {d.name: GridRun.read(d) for d in device_dirs if not d.name.startswith("cpu")}
    return {name: run for name, run in measured.items() if run.shapes()}


def headline(device_dirs: list[Path]) -> list[str]:
    """The report's first table: every GPU against the targets (engine-only and end-to-end latency, speedups,
    memory, fidelity), one column per GPU; nothing without a GPU grid."""
    runs = _gpu_runs(device_dirs)
    if not runs:
        return []
    md = ["## Every GPU against the targets\n", "Each GPU's numbers come from its own run; ratios within a column are from one run.\n"]
    md.append(_targets_side_by_side({d.name: evaluate(d) for d in device_dirs if d.name in runs}))
    return md


def gpu_comparison(device_dirs: list[Path]) -> list[str]:
    """Key grid points of every GPU folder side by side (only with two or more)."""
    runs = _gpu_runs(device_dirs)
    if len(runs) < 2:
        return []
    names = list(runs)
    md = [f"## Engine-only median latency (ms) at the key points, GPUs side by side; last column: {names[0]} / {names[-1]}\n"]
    md.append(table(["model", "batch", "seq", "precision", *names, "ratio"], _key_points(runs)) + "\n")
    return md


def _targets_side_by_side(targets: dict[str, list[Target]]) -> str:
    names = list(targets)
    first = targets[names[0]]
    rows = ([t.name, t.wanted, *(f"{targets[n][i].measured} ({targets[n][i].verdict})" for n in names)] for i, t in enumerate(first))
    return table(["target", "wanted", *names], rows) + "\n"


def _key_points(runs: dict[str, GridRun]) -> list[list[Any]]:
    """Each precision's median at the key points that any GPU measured, and the first GPU's over the last's."""
    rows = []
    for model in sorted({m for run in runs.values() for m, _, _ in run.shapes()}):
        for batch in KEY_BATCHES:
            for seq in KEY_SEQS:
                for precision in PRECISIONS:
                    values = [median_ms(run.engine(model, precision, batch, seq)) for run in runs.values()]
                    if any(v is not None for v in values):
                        rows.append([model, batch, seq, precision, *values, ratio(values[0], values[-1])])
    return rows
