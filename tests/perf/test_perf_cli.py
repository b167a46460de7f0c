"""``python -m perf engine``, ``grid`` and ``sweep`` run to the end on the tiny repository (their error paths are tested elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_repo import NAME

from perf import results as rf
from perf.cli import main


def _perf(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def _records(out: Path, file: str) -> list[dict[str, object]]:
    (path,) = out.glob(f"*/{file}")  # out/<device>/file
    return rf.read_jsonl(path)


def test_perf_engine_times_each_runner_when_run_on_the_tiny_repository(tiny_repository: Path, tmp_path: Path) -> None:
    output = _perf("engine", "--models", NAME, "--repository", str(tiny_repository), "--out", str(tmp_path), "--precisions", "fp32",
                   "--batch-sizes", "2", "--seq-lens", "16", "--runs", "3", "--warmup", "1")  # fmt: skip
    path = Path(output.splitlines()[-1].removeprefix("appended to "))
    assert path.parent.parent == tmp_path  # out/<device>/
    (record,) = rf.read_jsonl(path)
    assert record["status"] == "ok" and record["runner"] == "onnxruntime_cpu_fp32" and record["runs"] == 3
    assert f"{record['key']}: median" in output


def test_perf_grid_times_every_point_when_run_on_the_tiny_repository(tiny_repository: Path, tmp_path: Path) -> None:
    output = _perf("grid", "--models", NAME, "--repository", str(tiny_repository), "--out", str(tmp_path), "--precisions", "fp32",
                   "--batch-sizes", "1,2", "--seq-lens", "8,16", "--device", "cpu", "--seconds", "0.02", "--no-cpu-baseline", "--no-torch",
                   "--no-progress")  # fmt: skip
    engines = [r for r in _records(tmp_path, rf.GRID_FILE) if r.get("kind") == "engine"]
    assert sorted(r["key"] for r in engines) == sorted(f"{NAME}|fp32|b{b}|s{s}" for b in (1, 2) for s in (8, 16))
    assert all(r["status"] == "ok" and float(r["median_ms"]) > 0 for r in engines)  # type: ignore[arg-type]
    assert all(f"{r['key']}: median" in output for r in engines)


@pytest.mark.server
@pytest.mark.timeout(300)
def test_perf_sweep_measures_every_configuration_when_run_against_a_server(grpc_url: str, tiny_repository: Path, tmp_path: Path) -> None:
    output = _perf("sweep", "--url", grpc_url, "--repository", str(tiny_repository), "--out", str(tmp_path), "--models", NAME,
                   "--precisions", "fp32", "--batch-sizes", "1,2", "--seq-lens", "16", "--concurrency", "1", "--targets", "engine,ensemble",
                   "--runtimes", "onnxruntime", "--no-progress")  # fmt: skip
    latest = {r["key"]: r for r in _records(tmp_path, rf.PERF_FILE)}
    assert sorted(latest) == sorted(f"{model}|b{b}|s16|c1" for model in (f"{NAME}_fp32_onnx", f"{NAME}_fp32") for b in (1, 2))
    assert all(r["status"] == "ok" and r["metrics"]["latency_p50"] > 0 for r in latest.values())  # type: ignore[index, operator]
    baselines = {r["key"]: r for r in _records(tmp_path, rf.BASELINE_FILE)}
    assert {k: r["status"] for k, r in baselines.items()} == {f"{NAME}|b1|s16": "ok", f"{NAME}|b2|s16": "ok"}
    assert len(_records(tmp_path, rf.DERIVED_FILE)) == 4
    assert output.rstrip().endswith('{"cpu_baseline_ok": 2, "engines_ok": 1, "perf_ok": 4}')
