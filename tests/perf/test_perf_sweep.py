"""Sweeps: grids, resume, error records, derived ratios (fake perf_analyzer), and a real server run."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import pytest
from tiny_repo import MAX_SEQ, NAME

from perf import results as rf
from perf.analyzer import PerfAnalyzerArgs, PerfAnalyzerError, parse_csv
from perf.records import CpuBaseline, DerivedRow, PerfPoint
from perf.sweep import SWEEPS, Sweep, derive, get_sweep, run_sweep
from toolkit.errors import BadInputError
from toolkit.repository.install import MANIFEST
from toolkit.repository.naming import tokenizer_model

DATA = Path(__file__).parent / "data"


class FakeAnalyzer:
    """Stands in for perf_analyzer: copies the captured CSV, fails on one model, counts calls."""

    def __init__(self, failing: str = "") -> None:
        self.calls: list[str] = []
        self.failing = failing

    def __call__(self, args: PerfAnalyzerArgs) -> list[dict[str, float]]:
        self.calls.append(args.model)
        if args.model == self.failing:
            raise PerfAnalyzerError(f"perf_analyzer on {args.model} exited 99: broken")
        args.csv_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / "perf_analyzer_engine_b2_c1-2.csv", args.csv_path)
        return parse_csv(args.csv_path)


def test_paper_sweep_has_360_configurations_per_runtime() -> None:
    paper = get_sweep("paper", runtimes=("onnxruntime",))
    assert len(paper.configs()) == 360
    assert len({c.key for c in paper.configs()}) == 360
    assert {c.target for c in paper.configs()} == {"ensemble"}  # engine models would return GPT-2's full logits


def test_get_sweep_raises_when_name_unknown() -> None:
    with pytest.raises(BadInputError, match="--plan"):
        get_sweep("huge")


def test_default_sweep_is_short() -> None:
    assert len(SWEEPS["default"].configs()) <= 48


def test_run_sweep_skips_finished_configurations_when_run_again(tmp_path: Path, tokenizer_json: Path) -> None:
    sweep = Sweep(
        name="t",
        models=("m",),
        precisions=("fp32", "fp16"),
        batch_sizes=(1, 2),
        seq_lens=(16,),
        runtimes=("onnxruntime",),
        targets=("engine", "ensemble"),
    )
    # No server: the fake stands in for perf_analyzer, and there are no statistics to read.
    offline = functools.partial(
        run_sweep,
        sweep,
        repository=None,
        out=tmp_path,
        tokenizer=tokenizer_json,
        cpu_baseline=False,
        progress=False,
        server_statistics=False,
    )
    fake = FakeAnalyzer(failing="m_fp16_onnx")
    out_dir = offline(runner=fake)
    assert len(fake.calls) == 8
    records = rf.read_jsonl(out_dir / rf.PERF_FILE)
    errors = [r for r in records if r["status"] == "error"]
    assert len(errors) == 2 and "broken" in errors[0]["error"]
    ok = [r for r in records if r["status"] == "ok"]
    assert all((out_dir / r["raw_csv"]).is_file() for r in ok)

    again = FakeAnalyzer()
    offline(runner=again)
    assert again.calls == []
    offline(runner=again, retry_errors=True)
    assert again.calls == ["m_fp16_onnx", "m_fp16_onnx"]
    derived = {r.key: r for r in derive(out_dir)}
    assert derived["m_fp16_onnx|b1|s16|c1"].speedup_vs_fp32 == pytest.approx(1.0)
    env = rf.read_jsonl(out_dir / rf.ENVIRONMENT_FILE)
    assert len(env) == 3 and env[0]["packages"]["tritonclient"] == "2.51.0"


@pytest.mark.server
@pytest.mark.timeout(240)
def test_sweep_records_failure_and_continues_when_sequence_exceeds_engine(grpc_url: str, tiny_repository: Path, tmp_path: Path) -> None:
    too_long = 2 * MAX_SEQ
    sweep = Sweep(
        name="tiny",
        models=(NAME,),
        precisions=("fp32",),
        batch_sizes=(1, 2),
        seq_lens=(too_long, 16),
        concurrencies=(1,),
        targets=("engine", "ensemble"),
        measurement_request_count=20,
        stability_percentage=40.0,
        baseline_runs=3,
        baseline_warmup=1,
    )
    out_dir = run_sweep(sweep, url=grpc_url, repository=tiny_repository, out=tmp_path, progress=False)
    latest = rf.latest_by_key(rf.read_records(out_dir / rf.PERF_FILE, PerfPoint))
    assert len(latest) == 8  # the TensorRT runtime is absent from the repository and left out
    for key, record in latest.items():
        if f"|s{too_long}|" in key:
            assert record.status == "error" and "exited" in str(record.error), record
        else:
            assert record.ok, record
            assert (record.metric("latency_p50") or 0) > 0 and (out_dir / str(record.raw_csv)).is_file()
    baselines = rf.latest_by_key(rf.read_records(out_dir / rf.BASELINE_FILE, CpuBaseline))
    assert baselines[f"{NAME}|b1|s16"].status == "ok"
    assert baselines[f"{NAME}|b1|s{too_long}"].status == "error"
    derived = [r for r in rf.read_records(out_dir / rf.DERIVED_FILE, DerivedRow) if r.batch_size == 1]
    assert all((r.speedup_vs_cpu or 0) > 0 and r.same_run for r in derived)
    assert json.loads((tiny_repository / tokenizer_model(NAME) / MANIFEST).read_text())["name"] == NAME
    assert latest[f"{NAME}_fp32_onnx|b1|s16|c1"].manifest_hash
    # Each ensemble request passed the tokenizer and the engine once; Triton adds its steps' compute into the ensemble's.
    hops = latest[f"{NAME}_fp32|b2|s16|c1"].hops or {}
    tokenizer, engine, ensemble = hops[tokenizer_model(NAME)], hops[f"{NAME}_fp32_onnx"], hops[f"{NAME}_fp32"]
    assert tokenizer["requests"] == engine["requests"] == ensemble["requests"] >= 20
    assert 0 < engine["compute_infer_us"] and 0 < tokenizer["compute_infer_us"]
    assert ensemble["compute_infer_us"] == pytest.approx(engine["compute_infer_us"] + tokenizer["compute_infer_us"], abs=1.0)
    assert ensemble["request_us"] > max(engine["request_us"], tokenizer["request_us"])
    assert set(latest[f"{NAME}_fp32_onnx|b1|s16|c1"].hops or {}) == {f"{NAME}_fp32_onnx"}
