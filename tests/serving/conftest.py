"""Tiny real models for server tests: BERT-like and GPT-2-like ONNX graphs with their tokenizers.

Random weights, exported and checked by the project's own ``toolkit.models.export`` (see ``tests/tiny_models.py``).
"""

from __future__ import annotations

import pytest
from moto_s3 import s3  # noqa: F401 (a fixture: moto's S3 server, defined once in tests/moto_s3.py)
from tiny_models import exported_onnx, served_tiny_bert
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from toolkit.artifacts import EngineArtifact, ServedModel
from toolkit.models.export import output_specs
from toolkit.models.loading import load_model
from toolkit.names import Precision

MAX_SEQ_LEN = 24
MIN_SEQ_LEN = 4  # GPT-2 only: exercises the tokenizer's padding up to a TensorRT-style minimum
MAX_BATCH_SIZE = 8
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "transformers turn text into vectors and vectors into text",
    "triton serves many models behind one server",
] * 20


@pytest.fixture(scope="session")
def bert_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """Tiny BertModel (2 layers, hidden 32) behind the real all-MiniLM-L6-v2 WordPiece tokenizer."""
    return served_tiny_bert(tmp_path_factory.mktemp("bert"), "tinybert", max_batch_size=MAX_BATCH_SIZE, max_seq_len=MAX_SEQ_LEN)


def _byte_level_tokenizer() -> Tokenizer:
    """A GPT-2-style byte-level BPE tokenizer with no pad token, trained on a tiny corpus."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


@pytest.fixture(scope="session")
def gpt2_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """Tiny GPT2LMHeadModel (2 layers, hidden 32) with a byte-level BPE tokenizer without pad token."""
    folder = tmp_path_factory.mktemp("gpt2")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir()
    tokenizer = _byte_level_tokenizer()
    tokenizer.save(str(tokenizer_dir / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size()
    overrides = {"vocab_size": vocab, "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}
    model = load_model("gpt2", random_weights=True, name="tinygpt2", config_overrides=overrides)
    path = exported_onnx(model, folder / "gpt2_fp32.onnx")
    engine = EngineArtifact(Precision.FP32, "onnxruntime", path, output_specs(model))
    return ServedModel(
        name="tinygpt2", family=model.family.name, tokenizer_dir=tokenizer_dir, engine_inputs=model.family.engine_inputs(),
        ensemble_outputs=model.family.ensemble_outputs(model), max_batch_size=MAX_BATCH_SIZE, max_seq_len=MAX_SEQ_LEN,
        min_seq_len=MIN_SEQ_LEN, engines=[engine],
    )  # fmt: skip
