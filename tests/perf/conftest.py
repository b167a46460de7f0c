"""Fixtures for perf tests: a scoped server on the tiny repository (``tests/conftest.py``), a captured CSV."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture
def grpc_url(tiny_repository: Path, tmp_path: Path) -> Iterator[str]:
    """A real server on the tiny repository for the test; always stopped afterwards."""
    from toolkit.serving.server import running_server

    with running_server(tiny_repository, state_dir=tmp_path / "server" / "state", timeout=120.0) as handle:
        yield f"localhost:{handle.ports.grpc}"


@pytest.fixture
def fixture_csv(tmp_path: Path) -> Path:
    """A copy of the perf_analyzer CSV captured from a real run (engine model, batch 2, concurrency 1:2)."""
    return Path(shutil.copy(DATA / "perf_analyzer_engine_b2_c1-2.csv", tmp_path / "captured.csv"))
