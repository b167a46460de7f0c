"""Load sweeps on a real server (CI-sized: MiniLM with one layer, up to 32 clients, short windows)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from perf.load import LOADS, LoadPlan, run_load
from perf.load_report import load_points
from perf.processes import CLIENT, SERVER, server_rss_mib
from perf.records import LoadPoint, LoadSoak
from perf.results import read_jsonl
from toolkit.build import BuildRequest, build_model
from toolkit.errors import BadInputError
from toolkit.names import Precision
from toolkit.repository.configs import ServingOptions
from toolkit.serving import running_server

NAME = "loadmini"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, int, str]]:
    """MiniLM (one layer) with its one-hop model, on a real server; (repository, gRPC url, server pid, metrics url)."""
    repository = tmp_path_factory.mktemp("load_repo")
    request = BuildRequest(model="minilm", name=NAME, layers=1, precisions=(Precision.FP32,), max_batch=32, min_seq=1, opt_seq=32,
                           max_seq=64, runtimes=("onnxruntime",), serving=ServingOptions(one_hop=True, intra_op_threads=1))  # fmt: skip
    build_model(request, repository, tmp_path_factory.mktemp("load_work"), log=lambda _: None)
    with running_server(repository, state_dir=tmp_path_factory.mktemp("load_server"), timeout=300) as handle:
        yield repository, f"127.0.0.1:{handle.ports.grpc}", handle.pid, f"http://127.0.0.1:{handle.ports.metrics}/metrics"


@pytest.mark.server
@pytest.mark.timeout(600)
def test_load_sweep_forms_batches_without_failures_and_the_server_survives_clients_that_leave(
    served: tuple[Path, str, int, str], tmp_path: Path
) -> None:
    repository, url, pid, metrics_url = served
    plan = dataclasses.replace(LOADS["load-cpu"], models=(NAME,), paths=("ensemble", "onehop"), concurrencies=(1, 32), window_ms=700)
    out_dir, summary = run_load(plan, url, repository, tmp_path, server_pid=pid, progress=False, metrics_url=metrics_url)
    points = load_points(out_dir)
    assert [(p.triton_model, p.concurrency, p.status) for p in points] == [
        (f"{NAME}_fp32", 1, "ok"), (f"{NAME}_fp32", 32, "ok"), (f"{NAME}_fp32_onehop", 1, "ok"), (f"{NAME}_fp32_onehop", 32, "ok"),
    ]  # fmt: skip
    at_32 = {p.triton_model: p.batches or {} for p in points if p.concurrency == 32}
    assert at_32[f"{NAME}_fp32"][f"{NAME}_fp32_onnx"] > 1 and at_32[f"{NAME}_fp32"][f"{NAME}_tokenizer"] > 1
    assert at_32[f"{NAME}_fp32_onehop"][f"{NAME}_fp32_onehop"] > 1
    assert summary.errors == 0 and summary.failures == 0 and summary.requests > 100
    assert summary.disconnect is not None and summary.disconnect["clients_gave_up"] > 0 and summary.disconnect["served_after"] is True
    assert all(p.server_rss_mib_after and p.server_rss_mib_after > 50 for p in points)
    assert all(r["schema"] == 1 for r in read_jsonl(out_dir / "load.jsonl"))
    _assert_where_the_time_went(points)


def _assert_where_the_time_went(points: list[LoadPoint]) -> None:
    """Each level's Python steps report their phases, which add up to (nearly all of) their execute, and the CPU
    seconds of the server, its steps and perf_analyzer."""
    phases = {f"{NAME}_tokenizer": {"decode", "tokenize", "respond"}, f"{NAME}_fp32_onnx": {"gather", "engine", "respond"},
              f"{NAME}_fp32_onehop": {"decode", "tokenize", "pack", "engine", "respond"}}  # fmt: skip
    for point in points:
        steps = point.steps or {}
        driven = phases.keys() - {f"{NAME}_fp32_onehop"} if point.path == "ensemble" else {f"{NAME}_fp32_onehop"}
        assert driven <= steps.keys(), (point.key, steps)
        for model in driven:
            step = steps[model]
            assert {f"{phase}_us" for phase in phases[model]} <= step.keys() and step["rows"] >= step["executions"] > 0
            parts = sum(value for key, value in step.items() if key.endswith("_us") and key != "execute_us")
            assert 0.8 * step["execute_us"] <= parts <= step["execute_us"] * 1.001, (model, step)
        cpu = point.cpu or {}
        assert cpu["wall_s"] > 0.5 and cpu["cores"] >= 1
        assert cpu["seconds"][CLIENT] > 0 and cpu["seconds"][SERVER] > 0, cpu
        assert all(cpu["seconds"].get(model, 0) > 0 for model in driven), cpu


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
    point = _point(1, 1000.0, 5.0, batches={"m_tokenizer": 3.0, "m_fp16_onnx": 4.0})
    capacity, ratio = efficiency(point, {("m", "fp16", 128): batches})
    assert capacity == pytest.approx(2000.0) and ratio == pytest.approx(0.5)  # 4 rows per 2 ms alone; 1000 served
    assert efficiency(dataclasses.replace(point, batches={}), {("m", "fp16", 128): batches}) == (None, None)


def _point(concurrency: int, rate: float, p99: float, gpus: list[int] | None = None, batches: dict[str, float] | None = None) -> LoadPoint:
    return LoadPoint.from_fields({
        "run_id": "r", "device": "cpu-x", "model": "m", "precision": "fp16", "path": "ensemble", "triton_model": "m_fp16", "texts": 1,
        "concurrency": concurrency, "seq_len": 128, "status": "ok", "requests_per_s": rate, "gpus": gpus or [],
        "metrics": {"latency_p50": p99 / 2, "latency_p99": p99}, "batches": batches or {"m_fp16_onnx": 1.0 + concurrency / 4},
    })  # fmt: skip


def test_load_section_plots_throughput_against_p99_and_tables_every_level(tmp_path: Path) -> None:
    from perf import results as rf
    from perf.load_report import load_section

    device = tmp_path / "cpu-x"
    for concurrency, rate, p99 in ((1, 100.0, 12.0), (8, 400.0, 30.0)):
        rf.append_record(device / "load.jsonl", _point(concurrency, rate, p99))
    soak = {"run_id": "r", "device": "cpu-x", "levels": 2, "errors": 0, "requests": 5000, "failures": 0, "unstable": 0}
    rf.append_record(device / "load.jsonl", LoadSoak.from_fields({**soak, "rss_mib_first": 700.0, "rss_mib_last": 710.0, "rss_growth": 0.014}))
    md = "\n".join(load_section(device, tmp_path, tmp_path / "plots"))
    assert (tmp_path / "plots" / "load_throughput_p99.png").stat().st_size > 1000
    assert "| m_fp16 | 1 | 8 | 400.00 | 15.00 | 30.00 | yes | onnx 3.0 |" in md and "| r | 5000 | 0 | 0 | 700.00 | 710.00 | 0.01 |" in md


def test_steady_memory_starts_after_each_models_first_level() -> None:
    """The first level of each model pays its warm-up (the H200: +1.3 GB when a model's stubs first ran on the GPU);
    growth under load is measured from there, model by model."""
    from perf.load import steady_memory

    def level(model: str, concurrency: int, rss: float, requests: float) -> LoadPoint:
        point = dataclasses.replace(_point(concurrency, 100.0, 5.0), triton_model=model, server_rss_mib_after=rss)
        return dataclasses.replace(point, hops={model: {"requests": requests, "executions": requests}})

    points = [level("a", 1, 1000.0, 10), level("a", 64, 1010.0, 5000), level("a", 256, 1012.0, 9000),
              level("b", 1, 1400.0, 10), level("b", 64, 1407.0, 7000), dataclasses.replace(level("b", 256, 0.0, 0), status="error")]  # fmt: skip
    assert steady_memory(points) == [
        {"model": "a", "requests": 14000, "rss_mib_start": 1000.0, "rss_mib_end": 1012.0, "growth": 0.012},
        {"model": "b", "requests": 7000, "rss_mib_start": 1400.0, "rss_mib_end": 1407.0, "growth": 0.005},
    ]


def test_load_section_lists_levels_without_a_measurement_and_reads_the_grid_beside_the_sweep(tmp_path: Path) -> None:
    """A level perf_analyzer could not measure is said with its error; efficiency divides by the engine grid run
    beside the load sweep (grid_load.jsonl), not by the paper's grid."""
    from perf import results as rf
    from perf.load_report import engine_medians, load_section

    device = tmp_path / "cpu-x"
    rf.append_record(device / "load.jsonl", _point(1, 100.0, 12.0))
    failed = dataclasses.replace(_point(256, 0.0, 0.0), status="error", error="PerfAnalyzerError: failed to connect to all addresses")
    rf.append_record(device / "load.jsonl", failed)
    md = "\n".join(load_section(device, tmp_path, tmp_path / "plots"))
    assert "- m_fp16 x1, 256 clients: PerfAnalyzerError: failed to connect to all addresses" in md
    assert "| m_fp16 | 1 | 256 |" not in md

    environment = {"kind": "environment", "run_id": "g", "device": "cpu-x"}
    engine = {"kind": "engine", "run_id": "g", "model": "m", "precision": "fp16", "batch_size": 4, "seq_len": 128, "status": "ok", "median_ms": 2.0}
    for file, median in ((rf.GRID_FILE, 9.0), (rf.LOAD_GRID_FILE, 2.0)):
        rf.append_jsonl(device / file, environment)
        rf.append_jsonl(device / file, {**engine, "median_ms": median})
    assert engine_medians(device) == {("m", "fp16", 128): {4: 2.0}}

    # A later grid beside a sweep of another model keeps this model's engines (each such run times only what it served).
    rf.append_jsonl(device / rf.LOAD_GRID_FILE, {**environment, "run_id": "h"})
    rf.append_jsonl(device / rf.LOAD_GRID_FILE, {**engine, "run_id": "h", "model": "other", "median_ms": 1.0})
    rf.append_jsonl(device / rf.LOAD_GRID_FILE, {**engine, "run_id": "h", "batch_size": 8, "median_ms": 3.0})
    assert engine_medians(device) == {("m", "fp16", 128): {4: 2.0, 8: 3.0}, ("other", "fp16", 128): {4: 1.0}}


def test_scaling_rows_compare_n_gpus_with_n_times_one_gpu_at_the_same_clients() -> None:
    from perf.load_report import scaling_rows

    rows = scaling_rows([_point(64, 4000.0, 10.0, gpus=[0]), _point(64, 7200.0, 9.0, gpus=[0, 1]), _point(64, 50.0, 80.0)])
    assert rows == [["m_fp16", 1, 64, 4000.0, 10.0, 2, 7200.0, 9.0, pytest.approx(0.9)]]


def test_family_section_puts_each_familys_engine_beside_pytorch_eager_and_compile(tmp_path: Path) -> None:
    from perf import results as rf
    from perf.family_report import FAMILIES_FILE, family_section
    from perf.records import FamilyBench

    row = {"status": "ok", "median_ms": 0.5}
    bench = FamilyBench.from_fields({
        "model": "mpnet-base", "family": "mpnet", "run_id": "1", "device": "h200", "status": "ok",
        "fused_ops": {"SkipLayerNormalization": 12}, "engine_fp16": {"b1_s128": row, "b32_s512": {"status": "ok", "median_ms": 8.0}},
        "torch_eager_fp16": {"b1_s128": {"status": "ok", "median_ms": 4.0}}, "torch_compile_fp16": {"b1_s128": {"status": "error"}},
    })  # fmt: skip
    rf.append_record(tmp_path / FAMILIES_FILE, bench)
    md = "\n".join(family_section(tmp_path))
    assert "| mpnet-base | mpnet | 0.50 | 4.00 | – | 8.00 | – | 8.00 | – | – | – | – | SkipLayerNormalization 12 | **no** |" in md


def test_a_level_whose_clients_failed_to_connect_is_measured_once_more(monkeypatch: pytest.MonkeyPatch) -> None:
    from perf.analyzer import PerfAnalyzerArgs, PerfAnalyzerError
    from perf.load import _connected

    monkeypatch.setattr("perf.load.time.sleep", lambda _: None)
    args = PerfAnalyzerArgs(model="m", csv_path=Path("unused.csv"))
    failures = ["Thread [36] had error: Socket closed", "Thread [92] had error: failed to connect to all addresses; last error: UNAVAILABLE: Broken pipe"]

    def flaky(_: PerfAnalyzerArgs) -> list[dict[str, float]]:
        if failures:
            raise PerfAnalyzerError(failures.pop())
        return [{"throughput": 5.0}]

    record: dict[str, object] = {}
    assert _connected(flaky, args, record, retries=2) == [{"throughput": 5.0}] and record == {"connect_retries": 2}

    def refused(_: PerfAnalyzerArgs) -> list[dict[str, float]]:
        raise PerfAnalyzerError("failed to connect to all addresses")

    def broken(_: PerfAnalyzerArgs) -> list[dict[str, float]]:
        raise PerfAnalyzerError("model m is not ready")

    for runner in (refused, broken):
        with pytest.raises(PerfAnalyzerError):
            _connected(runner, args, {})


def test_serving_targets_take_the_best_level_within_the_budget_from_sweeps_and_searches(tmp_path: Path) -> None:
    """Throughput counts only levels under the p99 budget (a search's level can be the best); latency is the one-client
    p50; the soak needs no failure and under 5% memory growth per model over 100,000 requests after its warm-up."""
    from perf import results as rf
    from perf.load_targets import evaluate_load
    from perf.records import TuneTrial

    device = tmp_path / "h200"

    def level(model: str, concurrency: int, rate: float, p99: float, rss: float, requests: float) -> LoadPoint:
        point = dataclasses.replace(_point(concurrency, rate, p99), model=model, triton_model=f"{model}_fp16_onehop", server_rss_mib_after=rss)
        return dataclasses.replace(point, hops={point.triton_model: {"requests": requests, "executions": requests}}, code="abc")

    one_client = level("bert-base-uncased", 1, 480.0, 4.0, 1100.0, 5e3)
    hop = one_client.triton_model
    one_client = dataclasses.replace(
        one_client, metrics={**(one_client.metrics or {}), "network_server_send_recv": 0.28},
        steps={hop: {"rows": 10.0, "executions": 10.0, "execute_us": 1500.0, "tokenize_us": 300.0, "engine_us": 800.0}},
        hops={hop: {**(one_client.hops or {})[hop], "compute_infer_us": 1700.0}},
        cpu={"wall_s": 1.0, "cores": 16, "seconds": {"client": 0.5, "tritonserver": 0.46}},
    )  # fmt: skip
    for point in (level("minilm", 1, 600.0, 2.4, 1000.0, 5e3), level("minilm", 128, 12500.0, 19.0, 1020.0, 2e5),
                  level("minilm", 256, 13000.0, 31.0, 1030.0, 3e5), one_client, level("bert-base-uncased", 64, 7000.0, 14.0, 1190.0, 1e5)):  # fmt: skip
        rf.append_record(device / "load.jsonl", point)
    soak = {"run_id": "r", "device": "h200", "code": "abc", "levels": 5, "errors": 0, "requests": 605000, "failures": 0, "unstable": 0}
    rf.append_record(device / "load.jsonl", LoadSoak.from_fields({**soak, "disconnect": {"served_after": True}}))
    trial = {"run_id": "t", "device": "h200", "code": "abc", "model": "bert-base-uncased", "precision": "fp16", "p99_budget_ms": 20.0,
             "candidate": {}, "flags": "--one-hop", "score": 9000.0, "best": True,
             "levels": [{"concurrency": 128, "status": "ok", "requests_per_s": 9000.0, "p99_ms": 17.0, "failures": 0, "batches": {"x_onehop": 24.0}}]}  # fmt: skip
    rf.append_record(device / "tune.jsonl", TuneTrial.from_fields(trial))
    verdicts = {target.name.split(":")[0]: (target.met, target.measured) for target in evaluate_load(device)}
    assert verdicts["minilm FP16 single texts"][0] is True and verdicts["minilm FP16 single texts"][1].startswith("12,500 req/s")
    assert verdicts["bert-base-uncased FP16 single texts"] == (True, "9,000 req/s, p99 17.0 ms, 128 clients, `--one-hop` (tune t @abc)")
    met, measured = verdicts["bert-base-uncased FP16 b1 s128, 1 client"]
    assert met is False and measured.startswith("2.00 ms, of which 0.28 ms gRPC and client send/receive")
    assert measured.endswith("Bound: onehop step: 1.0 rows per execute of 1.50 ms (tokenize 0.30, engine 0.80), stub round trip 0.20 ms; host cores 6% busy")
    assert verdicts["serving efficiency of bert-base-uncased FP16 at its best level within the budget"][0] is None  # no grid beside it
    soak_met, soak_text = next(v for name, v in verdicts.items() if name.startswith("soak"))
    assert soak_met is False and "8.2% (worst of 2 models)" in soak_text  # bert-base: 1100 -> 1190 MiB over 100,000 requests
    one_client_search = {**trial, "run_id": "c1", "flags": "--tokenizer-threads 1 --one-hop", "best": False,
                         "levels": [{"concurrency": 1, "status": "ok", "requests_per_s": 700.0, "p50_ms": 1.4, "p99_ms": 1.9, "failures": 0}]}  # fmt: skip
    rf.append_record(device / "tune.jsonl", TuneTrial.from_fields(one_client_search))
    latency = next(t for t in evaluate_load(device) if t.name.startswith("bert-base-uncased FP16 b1 s128, 1 client"))
    assert latency.met is True and latency.measured.startswith("1.40 ms") and "(tune c1 @abc)" in latency.measured  # a search's p50 counts


def test_a_missed_target_is_explained_by_the_best_level_that_recorded_its_steps() -> None:
    from perf.load_targets import Level, _with_bound
    from perf.targets import Target

    def level(rate: float, steps: dict[str, dict[str, float]] | None) -> Level:
        return Level("m", "m_fp16_onehop", 128, rate, None, 15.0, 0, None, "load r @abc", steps)

    unrecorded = level(9000.0, None)  # the best, from a search before steps were recorded
    recorded = level(8000.0, {"m_fp16_onehop": {"rows": 40.0, "executions": 2.0, "execute_us": 4000.0, "tokenize_us": 1500.0}})
    missed = Target("t", ">= 10,000", "9,000", False)
    explained = _with_bound(missed, unrecorded, [unrecorded, recorded])
    assert explained.measured == (
        "9,000. Bound: onehop step: 20.0 rows per execute of 4.00 ms (tokenize 1.50) "
        "(at 8,000 req/s, p99 15.0 ms, 128 clients, m_fp16_onehop (load r @abc))"
    )
    assert _with_bound(Target("t", ">= 1", "9,000", True), unrecorded, [recorded]).measured == "9,000"  # met: nothing to explain
