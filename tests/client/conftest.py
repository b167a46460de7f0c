"""Client tests' fixtures: a dead port, and the serving tests' tiny models."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def dead_port() -> int:
    """A local TCP port nothing listens on (bound, read, released)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serving_fixtures() -> Any:
    """The serving tests' conftest as a module, so its tiny-model fixtures are reused here, not copied."""
    path = Path(__file__).resolve().parents[1] / "serving" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_serving_conftest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_serving = _serving_fixtures()
bert_model = _serving.bert_model  # tiny BertModel + MiniLM tokenizer, fp32 ONNX engine
gpt2_model = _serving.gpt2_model  # tiny GPT2LMHeadModel + byte-level BPE tokenizer, fp32 ONNX engine
