"""Load sweeps on a real server (CI-sized: MiniLM with one layer, up to 32 clients, short windows)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from perf.load import LOADS, LoadPlan, run_load, server_rss_mib
from perf.results import read_jsonl
from toolkit.build import BuildRequest, build_model
from toolkit.errors import BadInputError
from toolkit.names import Precision
from toolkit.repository.configs import ServingOptions
from toolkit.serving import running_server

NAME = "loadmini"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, int]]:
    """MiniLM (one layer) with its one-hop model, on a real server; (repository, gRPC url, server pid)."""
    repository = tmp_path_factory.mktemp("load_repo")
    request = BuildRequest(model="minilm", name=NAME, layers=1, precisions=(Precision.FP32,), max_batch=32, min_seq=1, opt_seq=32,
                           max_seq=64, runtimes=("onnxruntime",), serving=ServingOptions(one_hop=True, intra_op_threads=1))  # fmt: skip
    build_model(request, repository, tmp_path_factory.mktemp("load_work"), log=lambda _: None)
    with running_server(repository, state_dir=tmp_path_factory.mktemp("load_server"), timeout=300) as handle:
        yield repository, f"127.0.0.1:{handle.ports.grpc}", handle.pid


@pytest.mark.server
@pytest.mark.timeout(600)
def test_load_sweep_forms_batches_without_failures_and_the_server_survives_clients_that_leave(
    served: tuple[Path, str, int], tmp_path: Path
) -> None:
    repository, url, pid = served
    plan = dataclasses.replace(LOADS["load-cpu"], models=(NAME,), paths=("ensemble", "onehop"), concurrencies=(1, 32), window_ms=700)
    out_dir, summary = run_load(plan, url, repository, tmp_path, server_pid=pid, progress=False)
    points = [r for r in read_jsonl(out_dir / "load.jsonl") if "kind" not in r]
    assert [(p["triton_model"], p["concurrency"], p["status"]) for p in points] == [
        (f"{NAME}_fp32", 1, "ok"), (f"{NAME}_fp32", 32, "ok"), (f"{NAME}_fp32_onehop", 1, "ok"), (f"{NAME}_fp32_onehop", 32, "ok"),
    ]  # fmt: skip
    at_32 = {p["triton_model"]: p for p in points if p["concurrency"] == 32}
    assert at_32[f"{NAME}_fp32"]["batches"][f"{NAME}_fp32_onnx"] > 1 and at_32[f"{NAME}_fp32"]["batches"][f"{NAME}_tokenizer"] > 1
    assert at_32[f"{NAME}_fp32_onehop"]["batches"][f"{NAME}_fp32_onehop"] > 1
    assert summary["errors"] == 0 and summary["failures"] == 0 and summary["requests"] > 100
    assert summary["disconnect"]["clients_gave_up"] > 0 and summary["disconnect"]["served_after"] is True
    assert all(p["server_rss_mib_after"] and p["server_rss_mib_after"] > 50 for p in points)


def test_load_plan_rejects_unknown_path_and_missing_models(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"paths \['twohop'\] unknown"):
        LoadPlan(models=("m",), paths=("twohop",))
    with pytest.raises(BadInputError, match=r"not in .*--one-hop"):
        run_load(LoadPlan(models=("absent",)), "127.0.0.1:1", tmp_path, tmp_path, progress=False)


def test_server_rss_counts_a_process_and_its_children() -> None:
    own = server_rss_mib(os.getpid())
    assert own is not None and own > 10 and server_rss_mib(None) is None


def test_efficiency_divides_served_sequences_by_the_engine_alone_at_the_formed_batch() -> None:
    from perf.load_report import efficiency, engine_ms_at

    batches = {1: 1.0, 4: 2.0, 16: 8.0}
    assert engine_ms_at(batches, 4) == 2.0 and engine_ms_at(batches, 64) == 8.0 and engine_ms_at(batches, 0.5) == 1.0
    assert engine_ms_at(batches, 2) == pytest.approx(2**0.5)  # log-log between 1 and 4
    point = {"model": "m", "precision": "fp16", "seq_len": 128, "texts": 1, "requests_per_s": 1000.0,
             "batches": {"m_tokenizer": 3.0, "m_fp16_onnx": 4.0}}  # fmt: skip
    capacity, ratio = efficiency(point, {("m", "fp16", 128): batches})
    assert capacity == pytest.approx(2000.0) and ratio == pytest.approx(0.5)  # 4 rows per 2 ms alone; 1000 served
    assert efficiency({**point, "batches": {}}, {("m", "fp16", 128): batches}) == (None, None)


def test_load_section_plots_throughput_against_p99_and_tables_every_level(tmp_path: Path) -> None:
    from perf import results as rf
    from perf.load_report import load_section

    device = tmp_path / "cpu-x"
    for concurrency, rate, p99 in ((1, 100.0, 12.0), (8, 400.0, 30.0)):
        rf.append_jsonl(device / "load.jsonl", {
            "key": f"m_fp16|t1|s128|c{concurrency}", "triton_model": "m_fp16", "model": "m", "precision": "fp16", "path": "ensemble",
            "texts": 1, "concurrency": concurrency, "seq_len": 128, "status": "ok", "requests_per_s": rate,
            "metrics": {"latency_p50": p99 / 2, "latency_p99": p99}, "batches": {"m_fp16_onnx": 1.0 + concurrency / 4}, "failures": 0,
        })  # fmt: skip
    rf.append_jsonl(device / "load.jsonl", {"kind": "soak", "key": "soak|r", "run_id": "r", "requests": 5000, "failures": 0, "unstable": 0,
                                            "rss_mib_first": 700.0, "rss_mib_last": 710.0, "rss_growth": 0.014})  # fmt: skip
    md = "\n".join(load_section(device, tmp_path, tmp_path / "plots"))
    assert (tmp_path / "plots" / "load_throughput_p99.png").stat().st_size > 1000
    assert "| m_fp16 | 1 | 8 | 400.00 | 15.00 | 30.00 | yes | onnx 3.0 |" in md and "| r | 5000 | 0 | 0 | 700.00 | 710.00 | 0.01 |" in md


def test_scaling_rows_compare_n_gpus_with_n_times_one_gpu_at_the_same_clients() -> None:
    from perf.load_report import scaling_rows

    def point(gpus: list[int], rate: float, p99: float) -> dict[str, object]:
        return {"triton_model": "m_fp16", "texts": 1, "concurrency": 64, "gpus": gpus, "requests_per_s": rate, "metrics": {"latency_p99": p99}}

    rows = scaling_rows([point([0], 4000.0, 10.0), point([0, 1], 7200.0, 9.0), point([], 50.0, 80.0)])  # type: ignore[list-item]
    assert rows == [["m_fp16", 1, 64, 4000.0, 10.0, 2, 7200.0, 9.0, pytest.approx(0.9)]]
