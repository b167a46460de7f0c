"""Results files: one JSON record per line, appended as measurements finish (so a sweep resumes)."""

from __future__ import annotations

import json
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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """All records of a JSON-lines file; a missing file or a torn last line (killed run) is tolerated."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record and flush it, so a killed sweep keeps every finished configuration."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()


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
