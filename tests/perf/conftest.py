"""Fixtures for perf tests: the tiny repository (built once per session) and a scoped server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_repo import MINILM_TOKENIZER, build_tiny_repository

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Triton repository of ``tests/perf/tiny_repo.py``."""
    return build_tiny_repository(tmp_path_factory.mktemp("tiny_repository"))


@pytest.fixture(scope="session")
def tokenizer_json() -> Path:
    """A real WordPiece ``tokenizer.json`` (all-MiniLM-L6-v2's)."""
    return MINILM_TOKENIZER


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
