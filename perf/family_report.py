"""Report section of ``families.jsonl`` (``scripts/family_bench.py``): each model family's FP16 engine against
PyTorch eager and ``torch.compile`` FP16 at batch 1 / length 128 and batch 32 / length 512, and what ONNX
Runtime fused. ``perf.report`` places it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perf import results as rf
from perf.plots import table
from perf.records import FamilyBench

FAMILIES_FILE = "families.jsonl"
SHAPES = ("b1_s128", "b32_s512")


def family_rows(device_dir: Path) -> list[FamilyBench]:
    """The latest record of each model, in file order."""
    return list(rf.latest_by_key(FamilyBench.from_json(r) for r in rf.read_jsonl(device_dir / FAMILIES_FILE)).values())


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _row(record: FamilyBench) -> list[Any]:
    cells: list[Any] = [record.model, record.family]
    for shape in SHAPES:
        engine = record.median("engine_fp16", shape)
        eager, compiled = record.median("torch_eager_fp16", shape), record.median("torch_compile_fp16", shape)
        cells += [engine, eager, compiled, _ratio(eager, engine), _ratio(compiled, engine)]
    fused = record.fused_ops or {}
    cells.append(", ".join(f"{op} {n}" for op, n in sorted(fused.items())) or "none")
    cells.append("yes" if fused.get("Attention") or fused.get("MultiHeadAttention") else "**no**")
    return cells


def family_section(device_dir: Path) -> list[str]:
    """One row per family: engine, eager and compiled medians (ms) at both shapes, the engine's speedups, fused ops."""
    records = [r for r in family_rows(device_dir) if r.ok]
    if not records:
        return []
    headers = ["model", "family"]
    for shape in SHAPES:
        headers += [f"{shape} engine", f"{shape} eager", f"{shape} compile", f"{shape} x eager", f"{shape} x compile"]
    return [
        "### Model families: FP16 engine against PyTorch (ms; x: PyTorch time / engine time)\n",
        "Random weights at each family's base size; the engine timed alone in a process of its own (a CUDA graph up to "
        "4096 tokens), PyTorch eager and `torch.compile(mode=\"reduce-overhead\")` FP16 of the very module the build "
        "exported, all in one run.\n",
        table([*headers, "fused ops", "attention fused"], (_row(r) for r in records)) + "\n",
    ]
