"""Inputs: real token ids of the exact length, texts that tokenize to it, perf_analyzer JSON."""

from __future__ import annotations

from pathlib import Path

import pytest

from perf.inputs import (
    batch_arrays,
    perf_analyzer_data,
    text_samples,
    token_samples,
)
from toolkit.models.tokenizers import load_tokenizer_file
from toolkit.names import TEXT


@pytest.mark.parametrize("seq_len", [8, 128, 512])
def test_token_samples_have_exact_length_and_special_tokens_when_cut(tokenizer_json: Path, seq_len: int) -> None:
    samples = token_samples(tokenizer_json, seq_len, 3)
    assert all(len(s["input_ids"]) == seq_len and sum(s["attention_mask"]) == seq_len for s in samples)
    assert samples[0]["input_ids"][0] == 101 and samples[0]["input_ids"][-1] == 102  # [CLS] ... [SEP]
    assert samples[0]["input_ids"] != samples[1]["input_ids"]


def test_text_samples_tokenize_to_length_when_encoded_again(tokenizer_json: Path) -> None:
    tokenizer = load_tokenizer_file(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    assert [len(tokenizer.encode(t).ids) for t in text_samples(tokenizer_json, 64, 3)] == [64, 64, 64]


def test_perf_analyzer_data_shapes_follow_inputs_when_engine_or_ensemble(tokenizer_json: Path) -> None:
    names = ("input_ids", "attention_mask", "token_type_ids")
    engine = perf_analyzer_data(tokenizer_json, names, 32, n_samples=4)
    assert len(engine["data"]) == 4 and set(engine["data"][0]) == set(names)
    assert engine["data"][0]["input_ids"]["shape"] == [32]
    ensemble = perf_analyzer_data(tokenizer_json, (TEXT,), 32, n_samples=2)
    assert isinstance(ensemble["data"][0][TEXT][0], str)
    arrays = batch_arrays(tokenizer_json, names, 4, 16)
    assert arrays["input_ids"].shape == (4, 16) and str(arrays["input_ids"].dtype) == "int64"
