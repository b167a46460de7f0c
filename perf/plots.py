"""Markdown tables and matplotlib plots (Agg backend, PNG files) for the reports."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from toolkit.names import Precision

PRECISION_ORDER = [p.value for p in Precision]  # series order in plots and tables


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def line_plot(
    points: Iterable[tuple[str, float, float | None]], title: str, xlabel: str, ylabel: str, path: Path, log_x: bool = False
) -> Path | None:
    """One line per series through its (x, y) points; points without a y are left out."""
    groups: dict[Any, list[tuple[float, float]]] = defaultdict(list)
    for name, x, y in points:
        if y is not None:
            groups[name].append((x, y))
    if not groups:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name in sorted(groups, key=lambda n: (PRECISION_ORDER.index(n) if n in PRECISION_ORDER else 99, str(n))):
        line = sorted(groups[name])
        ax.plot([p[0] for p in line], [p[1] for p in line], marker="o", label=str(name))
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def heatmap(points: Iterable[tuple[int, int, float | None]], title: str, path: Path) -> Path | None:
    """(batch, sequence, value) cells on a batch x sequence grid; cells without a value stay blank."""
    cells = {(batch, seq): value for batch, seq, value in points if value is not None}
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


def bars(labels: list[str], series: dict[str, list[float | None]], title: str, ylabel: str, path: Path) -> Path | None:
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


def stacked_bars(labels: list[str], series: dict[str, list[float]], title: str, xlabel: str, path: Path) -> Path | None:
    """Horizontal bars, one per label, each split into ``series`` (e.g. GPU time by kernel kind)."""
    if not labels or not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(labels) + 1.6))
    left = [0.0] * len(labels)
    for name, values in series.items():
        ax.barh(labels, values, left=left, label=name)
        left = [a + b for a, b in zip(left, values, strict=True)]
    ax.invert_yaxis()
    ax.set(title=title, xlabel=xlabel)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: the bars stay visible
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def image(md: list[str], path: Path | None, out: Path) -> None:
    if path is not None:
        md.append(f"![{path.stem}]({path.relative_to(out).as_posix()})\n")
