"""Typed records: every record already in results/ loads and writes back as it was read; new ones carry the schema."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from client.fidelity import FidelityRecord, read_results, write_results
from perf import results as rf
from perf.records import (
    SCHEMA_VERSION,
    UNVERSIONED,
    CpuBaseline,
    DerivedRow,
    EngineMemory,
    Experiments,
    GridMemory,
    PerfPoint,
    Record,
    RecordError,
    SweepConfig,
    SweepEnvironment,
    grid_record,
)
from toolkit.measurement.compare import OutputMetrics

RESULTS = Path(__file__).resolve().parents[2] / "results"
KINDS: dict[str, type[Record]] = {
    rf.PERF_FILE: PerfPoint,
    rf.BASELINE_FILE: CpuBaseline,
    rf.ENGINES_FILE: EngineMemory,
    rf.DERIVED_FILE: DerivedRow,
    rf.ENVIRONMENT_FILE: SweepEnvironment,
}
STAMP = {"run_id": "r1", "device": "h100", "gpu": "NVIDIA H100", "manifest_hash": "abc", "time": "2026-01-01T00:00:00+0000"}


def _stored(name: str) -> list[Path]:
    return sorted(RESULTS.rglob(name))


def _assert_round_trip(record: Record, stored: dict[str, Any]) -> None:
    assert record.schema == UNVERSIONED and record.extra == {}
    assert record.to_json() == {**stored, "schema": UNVERSIONED}  # nothing lost, nothing added but the schema
    assert type(record).from_json(record.to_json()) == record
    if "key" in stored:
        assert record.key == stored["key"]


@pytest.mark.parametrize("name", list(KINDS))
def test_stored_records_load_and_write_back_unchanged_when_read_as_their_kind(name: str) -> None:
    paths = _stored(name)
    assert paths, f"no {name} under {RESULTS}"
    for path in paths:
        for stored in rf.read_jsonl(path):
            _assert_round_trip(KINDS[name].from_json(stored), stored)


def test_stored_grid_records_load_and_write_back_unchanged_when_typed_by_kind() -> None:
    kinds = set()
    for path in _stored(rf.GRID_FILE):
        for stored in rf.read_jsonl(path):
            record = grid_record(stored)
            assert record is not None and record.kind == stored["kind"]
            _assert_round_trip(record, stored)
            kinds.add(record.kind)
    assert kinds == {"environment", "engine", "cpu_baseline", "torch", "memory"}


def test_stored_experiments_load_and_write_back_unchanged_and_give_their_kernel_profiles() -> None:
    profiles = 0
    for path in _stored("experiments_*.json"):
        stored = json.loads(path.read_text())
        record = Experiments.from_json(stored)
        assert record.to_json() == {**stored, "schema": stored.get("schema", UNVERSIONED)}  # older records have none
        assert Experiments.from_json(record.to_json()) == record
        assert path.name.startswith(record.file_name.removesuffix(".json"))
        profiles += len(record.kernel_profiles())
    assert profiles == 5  # BERT-base b1 s128 (graph, no graph); GPT-2 b1 s128 (graph, no graph), b32 s512


def test_new_record_carries_schema_version_key_and_triton_model_when_written() -> None:
    config = SweepConfig("minilm", "fp16", "onnxruntime", "ensemble", 4, 128, 1)
    point = PerfPoint(**vars(config), **STAMP, status="ok", metrics={"latency_p50": 2.0}, raw_csv="raw/x.csv")
    data = point.to_json()
    assert data["schema"] == SCHEMA_VERSION and data["key"] == "minilm_fp16|b4|s128|c1" and data["triton_model"] == "minilm_fp16"
    assert "error" not in data and "hops" not in data and "argv" not in data  # unset optional fields stay out
    assert PerfPoint.from_json(data) == point and point.config == config and point.metric("latency_p50") == 2.0


def test_gpu_memory_is_written_only_when_ok_even_when_unmeasured() -> None:
    common = {**STAMP, "model": "m", "precision": "fp16", "runtime": "onnxruntime"}
    measured = EngineMemory(**common, status="ok", engine="e", file_size_mib=1.0, gpu_memory_mib=None).to_json()
    failed = EngineMemory(**common, status="error", error="no engine file").to_json()
    assert "gpu_memory_mib" in measured and measured["gpu_memory_mib"] is None
    assert "gpu_memory_mib" not in failed and "file_size_mib" not in failed and failed["key"] == "m_fp16_onnx"
    memory = GridMemory(model="m", precision="fp16", batch_size=32, seq_len=512, file_mib=9.0, status="error", error="x")
    assert "gpu_memory_mib" not in memory.to_json()


def test_unknown_fields_are_kept_when_read_and_written_back() -> None:
    stored = {"key": "m|b1|s8", "model": "m", "batch_size": 1, "seq_len": 8, **STAMP, "status": "ok", "median_ms": 1.0, "new_field": [1]}
    record = CpuBaseline.from_json(stored)
    assert record.extra == {"new_field": [1]} and record.to_json()["new_field"] == [1]


def test_record_lacking_a_required_field_raises_naming_it() -> None:
    with pytest.raises(RecordError, match="CpuBaseline record needs batch_size"):
        CpuBaseline.from_json({"key": "m|b1|s8", "model": "m", "seq_len": 8, **STAMP, "status": "ok"})


def test_grid_rows_of_an_unknown_kind_are_left_out_when_read(tmp_path: Path) -> None:
    path = tmp_path / rf.GRID_FILE
    rf.append_jsonl(path, {"kind": "environment", "run_id": "1", "key": "environment|1"})
    rf.append_jsonl(path, {"kind": "future", "key": "x"})
    assert [r.kind for r in rf.read_grid(path)] == ["environment"]


def test_latest_by_key_keeps_the_last_record_of_each_key(tmp_path: Path) -> None:
    path = tmp_path / rf.BASELINE_FILE
    for status in ("error", "ok"):
        rf.append_record(path, CpuBaseline(model="m", batch_size=1, seq_len=8, **STAMP, status=status))
    (latest,) = rf.latest_by_key(rf.read_records(path, CpuBaseline)).values()
    assert latest.ok and latest.schema == SCHEMA_VERSION


def test_stored_fidelity_records_load_and_write_back_unchanged_when_read() -> None:
    paths = _stored("fidelity_*.json")
    assert paths, f"no fidelity file under {RESULTS}"
    for path in paths:
        stored = json.loads(path.read_text())["records"]
        records = read_results(path)
        # Records written before records carried a schema read as UNVERSIONED; newer ones (`make demo` writes one
        # into results/<this device>/) keep theirs.
        assert [r.to_json() for r in records] == [{"schema": UNVERSIONED, **s} for s in stored]
        assert [FidelityRecord.from_json(r.to_json()) for r in records] == records
        assert len({r.key for r in records}) == len(records)  # one record per case


def test_new_fidelity_record_carries_the_schema_version_and_reads_null_metrics_as_nan(tmp_path: Path) -> None:
    metrics = {name: 0.5 for name in ("cosine_mean", "max_abs", "mean_abs", "median_abs", "max_rel", "mean_rel", "median_rel")}
    output = OutputMetrics(elements=4, cosine_min=float("nan"), nan_rate=0.0, inf_rate=0.0, **metrics)
    record = FidelityRecord("m", "fp16", "onnxruntime", 1, 8, "text", "shipped", 2, {"last_hidden_state": output})
    path = write_results([record], tmp_path / "fidelity_m.json", {"gpus": []})
    (read,) = read_results(path)
    assert json.loads(path.read_text())["records"][0]["schema"] == SCHEMA_VERSION
    assert read.key == "m|fp16|onnxruntime|text|shipped|b1|s8" and math.isnan(read.outputs["last_hidden_state"].cosine_min)
    assert read.outputs["last_hidden_state"].top1_agreement is None
