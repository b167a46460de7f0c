"""Report: REPORT.md and PNGs from results folders, fidelity records, the cross-device table, CLI."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_perf_sweep import FakeAnalyzer

from client.fidelity import FidelityRecord, write_results
from perf import results as rf
from perf.cli import main
from perf.records import CpuBaseline, EngineMemory, PerfPoint, SweepConfig
from perf.report import fidelity_summaries, read_fidelity, request_breakdown, write_report
from perf.sweep import Sweep, derive, run_sweep
from toolkit.measurement.compare import OutputMetrics


def _results(out: Path, tokenizer: Path) -> Path:
    sweep = Sweep(
        name="t", models=("m",), precisions=("fp32", "fp16", "hybrid"), batch_sizes=(1, 4), seq_lens=(32, 128), runtimes=("onnxruntime",)
    )
    device_dir = run_sweep(
        sweep,
        repository=None,
        out=out,
        tokenizer=tokenizer,
        cpu_baseline=False,
        progress=False,
        runner=FakeAnalyzer(failing="m_hybrid_onnx"),
    )
    stamp = {"run_id": "x", "device": device_dir.name, "gpu": None, "manifest_hash": None, "time": "2026-01-01T00:00:00+0000"}
    for batch, seq in itertools.product(sweep.batch_sizes, sweep.seq_lens):
        baseline = CpuBaseline(model="m", batch_size=batch, seq_len=seq, **stamp, status="ok", median_ms=2.0 * batch * seq)
        rf.append_record(device_dir / rf.BASELINE_FILE, baseline)
    for precision, size in (("fp32", 90.0), ("fp16", 45.0), ("hybrid", 50.0)):
        engine = EngineMemory(model="m", precision=precision, runtime="onnxruntime", **stamp, status="ok", file_size_mib=size)
        rf.append_record(device_dir / rf.ENGINES_FILE, engine)
    return device_dir


def test_write_report_makes_markdown_and_pngs_when_results_exist(tmp_path: Path, tokenizer_json: Path) -> None:
    device_dir = _results(tmp_path, tokenizer_json)
    fidelity = [_fidelity("fp16", {"last_hidden_state": (0.99, 0.999, 0.0), "sentence_embedding": (0.995, 0.998, 0.25)})]
    write_results([*fidelity, _fidelity("fp32", {"last_hidden_state": (1.0, 1.0, 0.0)})], device_dir / "fidelity_m.json", {"gpus": []})
    shutil.copytree(device_dir, tmp_path / "other-gpu")
    report = write_report(tmp_path)
    text = report.read_text()
    pngs = {p.name for p in (tmp_path / "plots" / device_dir.name).glob("*.png")}
    assert {
        "latency_vs_batch_m_onnxruntime_engine.png",
        "latency_vs_seq_m_onnxruntime_engine.png",
        "throughput_vs_concurrency_m_onnxruntime_engine.png",
        "speedup_vs_cpu_m_onnxruntime_engine_fp16.png",
        "memory.png",
        "fidelity.png",
    } <= pngs
    assert "## Across devices" in text and "### Fidelity" in text and "### Failed configurations" in text
    # Each model and precision's worst output: the lowest cosines of the two, the highest NaN rate.
    assert "| m | fp32 | 1 | 1.0000000 | 1.0000000 | 0.000% | 0.000% |" in text
    assert "| m | fp16 | 1 | 0.9900000 | 0.9980000 | 25.000% | 0.000% |" in text
    derived = {r.key: r for r in derive(device_dir)}
    assert derived["m_fp16_onnx|b1|s32|c1"].memory_reduction_file_size == 0.5
    assert (derived["m_fp16_onnx|b1|s32|c1"].speedup_vs_cpu or 0) > 0
    for line in text.splitlines():
        if line.startswith("!["):
            assert (tmp_path / line.split("](")[1].rstrip(")")).is_file()


def _fidelity(precision: str, outputs: dict[str, tuple[float, float, float]]) -> FidelityRecord:
    """A served case whose outputs have these (cosine min, cosine mean, NaN rate)."""
    errors = {name: 0.0 for name in ("max_abs", "mean_abs", "median_abs", "max_rel", "mean_rel", "median_rel", "inf_rate")}
    metrics = {name: OutputMetrics(8, mean, low, nan_rate=nan, **errors) for name, (low, mean, nan) in outputs.items()}
    return FidelityRecord("m", precision, "onnxruntime", 1, 8, "text", "shipped", 1, metrics)


def _random(precision: str, outputs: dict[str, tuple[float, float, float]]) -> FidelityRecord:
    return replace(_fidelity(precision, outputs), inputs="random", batch=8)


def test_fidelity_summary_judges_cosine_on_real_text_and_nan_on_every_input_leaving_nan_out() -> None:
    records = [
        _fidelity("fp16", {"a": (float("nan"), float("nan"), 0.5), "b": (0.9, 0.95, 0.0)}),
        _random("fp16", {"a": (0.1, 0.2, 0.75)}),
        _fidelity("fp32", {"a": (1.0, 1.0, 0.0)}),
    ]
    fp32, fp16 = fidelity_summaries(records)
    assert (fp16.cases, fp16.cosine_min, fp16.cosine_mean, fp16.nan_rate, fp16.inf_rate) == (2, 0.9, 0.95, 0.75, 0.0)
    assert fp32.precision == "fp32" and fp32.row() == ["m", "fp32", 1, "1.0000000", "1.0000000", "0.000%", "0.000%"]


def test_read_fidelity_leaves_out_a_file_that_is_not_fidelity_results(tmp_path: Path) -> None:
    (tmp_path / "fidelity_old.json").write_text(json.dumps([{"model": "m", "precision": "fp16", "metrics": {"cosine_min": 0.99}}]))
    write_results([_fidelity("fp16", {"a": (0.9, 0.95, 0.0)})], tmp_path / "fidelity_m.json", {"gpus": []})
    assert [r.key for r in read_fidelity(tmp_path)] == ["m|fp16|onnxruntime|text|shipped|b1|s8"]


def test_cli_report_says_run_sweep_when_no_results(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "python -m perf sweep" in (tmp_path / "REPORT.md").read_text()


def test_cli_sweep_reports_unknown_sweep_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["sweep", "--plan", "huge", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "--plan" in result.output


def _profile(busy_gemm: float, wall: float) -> dict[str, object]:
    return {
        "wall_median_us": wall,
        "kernels_per_run": 10.0,
        "kernel_busy_us": busy_gemm + 20.0,
        "between_kernels_us": wall - busy_gemm - 20.0,
        "by_kind": {"gemm": {"per_run": 6.0, "us_per_run": busy_gemm}, "attention": {"per_run": 4.0, "us_per_run": 20.0}},
        "top": [],
    }


def test_report_shows_kernel_profiles_of_either_experiments_layout(tmp_path: Path) -> None:
    """The first experiments file profiled one shape (``shape`` beside the modes); later ones name each shape."""
    device = tmp_path / "results" / "h100"
    device.mkdir(parents=True)
    rf.append_jsonl(device / rf.GRID_FILE, {"kind": "environment", "run_id": "1", "key": "environment|1"})
    one_shape = {"shape": [1, 128], "graph_replay": _profile(300.0, 400.0), "no_graph": _profile(300.0, 1200.0)}
    per_shape = {"unit": "us per run", "b32_s512": {"runs": 10, "no_graph": _profile(9000.0, 9100.0)}}
    (device / "experiments_bert.json").write_text(json.dumps({"model": "bert", "code": "abc", "kernel_profile": one_shape}))
    (device / "experiments_gpt2.json").write_text(json.dumps({"model": "gpt2", "code": "def", "kernel_profile": per_shape}))
    report = write_report(tmp_path / "results").read_text()
    section = report.split("Where the GPU time of one FP16 run goes")[1]
    assert "| bert | b1_s128 | graph_replay | abc | 400.00 |" in section
    assert "| gpt2 | b32_s512 | no_graph | def | 9100.00 |" in section
    assert (tmp_path / "results" / "plots" / "h100" / "kernels_short.png").is_file()
    assert (tmp_path / "results" / "plots" / "h100" / "kernels_long.png").is_file()


def test_request_breakdown_splits_an_ensemble_request_into_grpc_steps_and_the_time_between() -> None:
    step = {"requests": 40, "executions": 40, "compute_input_us": 10.0, "compute_output_us": 20.0}
    record = PerfPoint(
        **vars(SweepConfig("m", "fp16", "onnxruntime", "ensemble", 1, 128, 1)),
        run_id="x",
        device="h100",
        gpu="NVIDIA H100",
        manifest_hash=None,
        time="2026-01-01T00:00:00+0000",
        status="ok",
        metrics={"client_send": 0.01, "network_server_send_recv": 0.3, "client_recv": 0.01, "latency_p50": 2.0},
        hops={
            "m_fp16_onnx": {**step, "queue_us": 30.0, "compute_infer_us": 600.0, "request_us": 660.0},
            "m_tokenizer": {**step, "queue_us": 40.0, "compute_infer_us": 200.0, "request_us": 270.0},
            "m_fp16": {**step, "queue_us": 1.0, "compute_infer_us": 1100.0, "request_us": 1130.0},
        },
    )
    assert record.triton_model == "m_fp16"
    parts = request_breakdown(record)
    assert parts is not None and list(parts)[:3] == ["gRPC and client", "tokenizer queue", "tokenizer compute"]
    assert parts["gRPC and client"] == pytest.approx(0.32)
    assert parts["tokenizer compute"] == pytest.approx(0.23) and parts["engine compute"] == pytest.approx(0.63)
    assert parts["ensemble between steps"] == pytest.approx(0.2)  # 1130 - 270 - 660 us
    assert request_breakdown(replace(record, hops={})) is None


def test_precision_section_tables_every_searched_models_variants_and_links_its_plot(tmp_path: Path) -> None:
    """A search's variants.json becomes report rows (a NaN cosine reads NaN, a failed bar is marked) and its plot is linked."""
    import json

    from perf.precision_report import precision_section

    folder = tmp_path / "h200" / "precision" / "outlier"
    folder.mkdir(parents=True)
    row = {"model": "outlier", "fp32_nodes": 0, "compute_nodes": 73, "fp32_flop_share": 0.0, "min_top1": None, "note": ""}
    rows = [
        {**row, "variant": "fp16", "worst_cosine": None, "nonfinite": 202752, "met": False, "latency_ms": 0.107, "latency_vs_fp16": 1.0},
        {**row, "variant": "auto", "fp32_nodes": 2, "worst_cosine": 0.9999991, "nonfinite": 0, "met": True, "latency_ms": 0.1057, "latency_vs_fp16": 0.988},
    ]
    (folder / "variants.json").write_text(json.dumps(rows))
    (folder / "report.png").write_bytes(b"png")
    md = "\n".join(precision_section(tmp_path / "h200", tmp_path))
    assert "| outlier | fp16 | 0/73 | 0.00% | NaN | 202752 | – | **fails** | 0.107 | 1.000x |" in md
    assert "| outlier | auto | 2/73 | 0.00% | 0.9999991 | 0 | – | met | 0.106 | 0.988x |" in md
    assert "![precision report outlier](h200/precision/outlier/report.png)" in md
    assert precision_section(tmp_path / "elsewhere", tmp_path) == []
