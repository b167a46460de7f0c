"""The engine-only grid, its targets table and report, on the CPU with a real (small) build of all three precisions."""

from __future__ import annotations

import shutil
from pathlib import Path

import fidelity_floors as floors
import pytest

from perf import results as rf
from perf.engine_grid import GridPlan, run_grid
from perf.report import write_report
from perf.targets import evaluate
from toolkit.environment import code_version
from toolkit.errors import BadInputError


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_grid_times_every_point_and_flags_fp16_overflow_when_hybrid_stays_finite(outlier_repository: Path, tmp_path: Path) -> None:
    plan = GridPlan(models=("outlier",), batch_sizes=(1, 2), seq_lens=(8, 16), device="cpu", target_seconds=0.02, min_runs=2)
    path = run_grid(plan, outlier_repository, tmp_path / "results", progress=False)
    (environment,) = [r for r in rf.read_jsonl(path) if r.get("kind") == "environment"]
    assert environment["code"] == code_version() and environment["plan"]["batch_sizes"] == [1, 2]
    engine = [r for r in rf.read_jsonl(path) if r.get("kind") == "engine"]
    assert len(engine) == 4 * 3 and all(r["status"] == "ok" and r["median_ms"] > 0 and r["runs"] >= 2 for r in engine)
    fp16 = [r for r in engine if r["precision"] == "fp16"]
    hybrid = [r for r in engine if r["precision"] == "hybrid"]
    assert all(r["nan_count"] + r["inf_count"] > 0 for r in fp16)
    print("hybrid cosine_min per point:", {r["key"]: r["cosine_min"] for r in hybrid})
    assert all(r["nan_count"] == r["inf_count"] == 0 and r["cosine_min"] >= floors.GRID_OUTLIER_HYBRID for r in hybrid)
    assert all("cosine_min" not in r for r in engine if r["precision"] == "fp32")

    (hybrid_target,) = [t for t in evaluate(path.parent, model="outlier") if t.name.startswith("hybrid cosine")]
    assert hybrid_target.met is True and "0 NaN/Inf" in hybrid_target.measured
    unmeasured = [t for t in evaluate(path.parent, model="outlier") if t.name.startswith("through Triton")]
    assert unmeasured[0].met is None and unmeasured[0].verdict == "not run"

    # Two GPU folders with the same records: the report compares them side by side.
    for gpu in ("h100", "h200"):
        shutil.copytree(path.parent, tmp_path / "results" / gpu)
    (tmp_path / "results" / "h200" / "NOTES.md").write_text("Run on the H200 with commit abc.")
    report = write_report(tmp_path / "results").read_text()
    # The headline table first (every GPU against the targets), then the numbers and plots, then provenance.
    sections = [line for line in report.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Every GPU against the targets" and sections[-1] == "## Where each number came from"
    headline, numbers, provenance = (report.index(s) for s in ("## Every GPU", "## h100\n", "## Where each number"))
    assert "| target | wanted | h100 | h200 |" in report[headline:numbers]
    assert "#### outlier: engine-only grid (4 shapes x 3 precisions)" in report[numbers:provenance]
    assert "| model | batch | seq | precision | h100 | h200 | ratio |" in report[numbers:provenance]
    assert "Run on the H200 with commit abc." in report[report.index("### h200\n", provenance) :]
    assert "Grid run " in report[provenance:] and "Grid run " not in report[:provenance]
    assert (tmp_path / "results" / "plots" / "h100" / "grid_fp16_speedup_outlier.png").is_file()


def test_grid_plan_rejects_plan_when_fp32_reference_or_sizes_are_missing() -> None:
    with pytest.raises(BadInputError, match="include it in --precisions"):
        GridPlan(models=("m",), precisions=("fp16", "hybrid"))
    with pytest.raises(BadInputError, match="batch sizes"):
        GridPlan(models=("m",), batch_sizes=(0,))


def test_grid_shapes_come_smallest_first_when_listed() -> None:
    shapes = GridPlan(models=("m",), batch_sizes=(1, 32), seq_lens=(512, 32)).shapes()
    assert shapes[0] == (1, 32) and shapes[-1] == (32, 512)


def test_cpu_baseline_points_are_timed_in_their_own_process(outlier_repository: Path) -> None:
    from perf.engine_grid import _cpu_points
    from toolkit.repository.lookup import engine_input_names, find_tokenizer, require_engine_file

    plan = GridPlan(models=("outlier",), cpu_points=((1, 8), (2, 16)), cpu_target_seconds=0.02)
    names = list(engine_input_names(outlier_repository, "outlier", "fp32", "onnxruntime"))
    fp32 = require_engine_file(outlier_repository, "outlier", "fp32")
    records = list(_cpu_points(plan, "outlier", fp32, find_tokenizer(outlier_repository, "outlier", None), names))
    assert [r.key for r in records] == ["outlier|cpu_fp32|b1|s8", "outlier|cpu_fp32|b2|s16"]
    assert all(r.kind == "cpu_baseline" and r.ok and (r.runs or 0) >= 3 and (r.median_ms or 0) > 0 for r in records)


def test_grid_table_adds_the_auto_columns_when_the_grid_timed_an_auto_variant(tmp_path: Path) -> None:
    from perf.grid_report import _model_section
    from perf.targets import GridRun

    device = tmp_path / "h200"
    rf.append_jsonl(device / rf.GRID_FILE, {"kind": "environment", "run_id": "g", "device": "h200"})
    medians = {"fp32": 4.0, "fp16": 1.0, "hybrid": 1.2, "auto": 1.02}
    for precision, median in medians.items():
        cosine = {} if precision == "fp32" else {"cosine_min": 0.99999, "nan_count": 0, "inf_count": 0}
        rf.append_jsonl(device / rf.GRID_FILE, {"kind": "engine", "run_id": "g", "model": "m", "precision": precision,
                                                "batch_size": 1, "seq_len": 128, "status": "ok", "median_ms": median, **cosine})  # fmt: skip
    (tmp_path / "plots").mkdir()
    md = "\n".join(_model_section(GridRun.read(device), "m", tmp_path, tmp_path / "plots"))
    assert "| auto ms | auto/fp16 | auto cos min | auto NaN/Inf |" in md
    assert "| 1.02 | 1.02 | 0.9999900 | 0 |" in md
