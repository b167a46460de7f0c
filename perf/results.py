"""Results files: one JSON record per line, appended as measurements finish (so a sweep resumes).

``read_jsonl``/``append_jsonl`` move JSON objects; ``read_records``/``append_record`` the typed records of
``perf.records`` on top of them.
"""

from __future__ import annotations

import json
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
EXPERIMENTS_GLOB = "experiments_*.json"  # scripts/gpu_experiments.py


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
