"""Engine timings from a process of their own (through the ONNX Runtime plug-in): every shape gets a row, failures
stay per shape or per engine."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tiny_repo import MAX_SEQ, NAME

from perf.inputs import batch_arrays
from toolkit.measurement.timing import TimingBudget, TimingJob
from toolkit.repository.lookup import engine_input_names, require_engine_file
from toolkit.runtimes import get_runtime

BUDGET = TimingBudget(0.02, 2, 20, 1)


def _job(repository: Path, tokenizer: Path, path: Path, shapes: tuple[tuple[int, int], ...]) -> TimingJob:
    names = engine_input_names(repository, NAME, "fp32")
    feeds: dict[tuple[int, int], dict[str, np.ndarray]] = {(b, s): batch_arrays(tokenizer, names, b, s) for b, s in shapes}
    return TimingJob(path, feeds, "cpu", BUDGET)


def test_every_shape_is_timed_in_another_process_and_a_too_long_one_fails_alone(tiny_repository: Path, tokenizer_json: Path) -> None:
    engine = require_engine_file(tiny_repository, NAME, "fp32")
    seen: list[tuple[int, int]] = []
    rows = get_runtime("onnxruntime").time_job(
        _job(tiny_repository, tokenizer_json, engine, ((1, 8), (2, 2 * MAX_SEQ), (2, 16))),
        on_row=lambda row: seen.append((row["batch_size"], row["seq_len"])),
    )
    assert seen == [(1, 8), (2, 2 * MAX_SEQ), (2, 16)]  # in order, as they finished
    for shape in ((1, 8), (2, 16)):
        assert rows[shape]["status"] == "ok" and rows[shape]["runs"] >= 2 and 0 < rows[shape]["min_ms"] <= rows[shape]["median_ms"]
    assert rows[(2, 2 * MAX_SEQ)]["status"] == "error"  # past the position table: this shape only
    assert "cuda_graph" not in rows[(1, 8)]


def test_an_engine_that_cannot_load_fails_every_shape(tiny_repository: Path, tokenizer_json: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(os.urandom(64))
    rows = get_runtime("onnxruntime").time_job(_job(tiny_repository, tokenizer_json, broken, ((1, 8), (1, 16))))
    assert set(rows) == {(1, 8), (1, 16)}
    assert all(r["status"] == "error" and r["batch_size"] == b and r["seq_len"] == s for (b, s), r in rows.items())
    assert all(r["error"].startswith("InvalidProtobuf") for r in rows.values())  # the load failure itself, not a lost process
