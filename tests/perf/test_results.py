"""Results files (``perf/results.py``): a sweep killed mid-append loses only the record it was writing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from perf import results as rf


def _killed_mid_append(path: Path, record: dict[str, str]) -> None:
    """What a sweep killed while appending ``record`` leaves: the line cut short, no newline."""
    line = json.dumps(record, sort_keys=True)
    with path.open("a") as handle:
        handle.write(line[: len(line) // 2])


def test_append_jsonl_keeps_next_record_when_last_line_is_torn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / rf.PERF_FILE
    rf.append_jsonl(path, {"key": "a"})
    _killed_mid_append(path, {"key": "b"})
    rf.append_jsonl(path, {"key": "c"})  # the resumed sweep's first record
    with caplog.at_level(logging.WARNING, logger="perf.results"):
        records = rf.read_jsonl(path)
    assert [r["key"] for r in records] == ["a", "c"]
    assert [line for line in path.read_text().splitlines() if line.startswith('{"key": "c"')] == ['{"key": "c"}']
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"{path}:2" in warning and "torn" in warning


def test_append_jsonl_writes_one_line_per_record_when_file_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "sub" / rf.GRID_FILE
    for key in ("a", "b"):
        rf.append_jsonl(path, {"key": key})
    assert path.read_text() == '{"key": "a"}\n{"key": "b"}\n'
