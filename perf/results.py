"""Results files: one JSON record per line, appended as measurements finish (so a sweep resumes).

``read_jsonl``/``append_jsonl`` move JSON objects; ``read_records``/``append_record`` the typed records of
``perf.records`` on top of them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from perf.records import Experiments, GridRecord, R, Record, grid_record

PERF_FILE = "perf.jsonl"
BASELINE_FILE = "cpu_baseline.jsonl"
ENGINES_FILE = "engines.jsonl"
DERIVED_FILE = "derived.jsonl"
ENVIRONMENT_FILE = "environment.jsonl"
RAW_DIR = "raw"
GRID_FILE = "grid.jsonl"  # perf.engine_grid
LOAD_GRID_FILE = "grid_load.jsonl"  # the engine grid run beside a load sweep (serving efficiency), kept apart from the paper's
EXPERIMENTS_GLOB = "experiments_*.json"  # scripts/gpu_experiments.py

log = logging.getLogger(__name__)


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


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


K = TypeVar("K", bound=Keyed)


def latest_by_key(records: Iterable[K]) -> dict[str, K]:
    """The last record of each ``key`` (a re-run replaces an earlier one), in the order keys first appear."""
    return {record.key: record for record in records}


def read_records(path: Path, kind: type[R]) -> list[R]:
    """Every record of a JSON-lines file of one kind, as ``kind`` (older schema versions included)."""
    return [kind.from_json(data) for data in read_jsonl(path)]


def append_record(path: Path, record: Record) -> None:
    """Append one typed record (``append_jsonl`` of its JSON)."""
    append_jsonl(path, record.to_json())


def write_records(path: Path, records: Iterable[Record]) -> None:
    """Replace ``path`` with ``records``."""
    write_jsonl(path, (record.to_json() for record in records))


def read_grid(path: Path) -> list[GridRecord]:
    """Every record of a ``grid.jsonl``, each typed by its ``kind`` (kinds this code does not know are left out)."""
    return [record for record in map(grid_record, read_jsonl(path)) if record is not None]


def read_experiments(device_dir: Path) -> list[Experiments]:
    """Every ``experiments_*.json`` of a device folder, by file name."""
    return [Experiments.from_json(json.loads(path.read_text())) for path in sorted(Path(device_dir).glob(EXPERIMENTS_GLOB))]


MORE_FILES = ("load.jsonl", "families.jsonl", "tune.jsonl")  # perf.load, scripts/family_bench.py, perf.tune


def device_dirs(out: Path) -> Iterator[Path]:
    """``out/<device>/`` folders that hold measurements."""
    if Path(out).is_dir():
        for child in sorted(Path(out).iterdir()):
            if child.is_dir() and any((child / f).is_file() for f in (PERF_FILE, BASELINE_FILE, ENGINES_FILE, GRID_FILE, *MORE_FILES)):
                yield child
