"""Results files: one JSON record per line, appended as measurements finish (so a sweep resumes)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

PERF_FILE = "perf.jsonl"
BASELINE_FILE = "cpu_baseline.jsonl"
ENGINES_FILE = "engines.jsonl"
DERIVED_FILE = "derived.jsonl"
ENVIRONMENT_FILE = "environment.jsonl"
RAW_DIR = "raw"
GRID_FILE = "grid.jsonl"  # perf.engine_grid

log = logging.getLogger(__name__)


def failure(error: BaseException, limit: int = 2000) -> dict[str, str]:
    """The fields of a record whose measurement raised ``error`` (message cut to ``limit`` characters)."""
    return {"status": "error", "error": f"{type(error).__name__}: {error}"[:limit]}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file (none when it is missing).

    A line that is not one JSON object (a run killed while writing it) is skipped with a warning naming
    the file, the line and its start: the records before and after it are kept.
    """
    if not Path(path).is_file():
        return []
    records = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict):
            records.append(record)
            continue
        log.warning(
            "%s:%d: skipped a torn line (not one JSON record; a run killed while writing it?): %r; delete the line to silence this",
            path, number, line[:80],
        )  # fmt: skip
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record on a line of its own, in one write, flushed to disk, so a killed sweep keeps every finished configuration.

    A file whose last line a killed run left without its newline gets one first: the new record never
    merges into the torn line (which ``read_jsonl`` then reports).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    with path.open("ab+") as handle:
        if handle.tell() > 0:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                line = b"\n" + line
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def latest_by_key(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each ``key`` (a re-run replaces an earlier one)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        if "key" in record:
            latest[record["key"]] = record
    return latest


def device_dirs(out: Path) -> Iterator[Path]:
    """``out/<device>/`` folders that hold measurements."""
    if Path(out).is_dir():
        for child in sorted(Path(out).iterdir()):
            if child.is_dir() and any((child / f).is_file() for f in (PERF_FILE, BASELINE_FILE, ENGINES_FILE, GRID_FILE)):
                yield child
