"""The README's Python example runs as written against a real server (its URL pointed at the test server)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from toolkit.serving.server import running_server

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_python_example() -> None:
    assert python_blocks(), "README.md lost its Python example"


@pytest.mark.server
@pytest.mark.timeout(600)
def test_readme_python_example_runs_against_a_real_server(minilm_repository: Path, tmp_path: Path) -> None:
    with running_server(minilm_repository, state_dir=tmp_path / "server") as handle:
        for block in python_blocks():
            code = block.replace("localhost:8001", f"localhost:{handle.ports.grpc}")
            namespace: dict[str, object] = {}
            exec(compile(code, str(README), "exec"), namespace)
    assert namespace["out"]["sentence_embedding"].shape == (1, 384)  # type: ignore[index]
