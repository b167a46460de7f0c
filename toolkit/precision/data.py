"""Data the precision tools measure on: real text (the shipped corpus or the user's file) and random token ids.

Text rows are packed: consecutive lines are joined until a row holds ``seq`` tokens, so every position is a
real token and no padding dilutes the statistics. Random rows draw ids uniformly from ``[low, high)``, every
position attended. Each set carries a :class:`DataSource` (file name, sha256, counts) that reports and
policy files record, so a result names the data it was found on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import BadInputError
from toolkit.text_packing import packed_lines

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_TEXTS = Path(__file__).resolve().parents[2] / "data" / "corpus.txt"
Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class DataSource:
    """Where a data set came from: ``text`` (file, sha256, lines) or ``random`` (seed, id range)."""

    kind: str
    rows: int
    batch_size: int
    seq_len: int
    file: str | None = None
    sha256: str | None = None
    lines: int | None = None
    seed: int | None = None
    id_range: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        record = {key: value for key, value in asdict(self).items() if value is not None}
        if self.id_range is not None:
            record["id_range"] = list(self.id_range)
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> DataSource:
        values = dict(record)
        if values.get("id_range") is not None:
            values["id_range"] = tuple(values["id_range"])
        return cls(**values)


@dataclass(frozen=True)
class DataSet:
    """Batches of engine inputs (INT64 ``[batch, seq]``) and their source."""

    source: DataSource
    batches: tuple[Feeds, ...] = field(repr=False)

    @property
    def kind(self) -> str:
        return self.source.kind

    def joined(self) -> Feeds:
        """All batches as one (the rows share one length): for tools that take a single feed."""
        return {name: np.concatenate([batch[name] for batch in self.batches]) for name in self.batches[0]}


def read_texts(path: Path) -> list[str]:
    """Non-empty stripped lines of a UTF-8 text file; an empty or non-UTF-8 file is a BadInputError naming it."""
    if not path.is_file():
        raise BadInputError(f"--texts {path}: no such file; pass a UTF-8 text file with one text per line")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BadInputError(
            f"--texts {path} is not UTF-8 (byte {error.start}: {error.reason}); save it as UTF-8 with one text per line"
        ) from None
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    if not lines:
        raise BadInputError(f"--texts {path} holds no text (empty or only blank lines); give one text per line")
    return lines


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_shape(batch_size: int, seq_len: int, batches: int) -> None:
    if batch_size < 1 or seq_len < 2 or batches < 1:
        raise BadInputError(
            f"batch size {batch_size}, sequence length {seq_len}, batches {batches}: need >= 1, >= 2, >= 1; fix --batch-sizes/--seq-lens/--batches"
        )


def packed_rows(tokenizer: PreTrainedTokenizerBase, lines: Sequence[str], rows: int, seq_len: int) -> list[list[int]]:
    """``rows`` token-id rows of ``seq_len`` (with the tokenizer's special tokens), each made of consecutive
    lines (wrapping round) joined until it is full; a file too short for one row gives shorter rows."""
    lengths = [len(ids) for ids in tokenizer(list(lines), add_special_tokens=False)["input_ids"]]
    texts = packed_lines(lines, lengths, rows, seq_len)
    encoded = tokenizer(texts, truncation=True, max_length=seq_len)["input_ids"]
    return [list(ids) for ids in encoded]


def _feeds(rows: list[list[int]], pad_id: int) -> Feeds:
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = row
        mask[index, : len(row)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def text_dataset(
    tokenizer: PreTrainedTokenizerBase, path: Path | None = None, batch_size: int = 4, seq_len: int = 64, batches: int = 2
) -> DataSet:
    """Packed text of ``path`` (default: the shipped ``data/corpus.txt``) as ``batches`` batches."""
    _check_shape(batch_size, seq_len, batches)
    file = path or DEFAULT_TEXTS
    lines = read_texts(file)
    rows = packed_rows(tokenizer, lines, batch_size * batches, seq_len)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    chunks = tuple(_feeds(rows[i * batch_size : (i + 1) * batch_size], pad_id) for i in range(batches))
    source = DataSource("text", len(rows), batch_size, seq_len, file=file.name, sha256=file_sha256(file), lines=len(lines))
    return DataSet(source, chunks)


def random_dataset(
    vocab_size: int,
    batch_size: int = 4,
    seq_len: int = 64,
    batches: int = 2,
    seed: int = 0,
    id_range: tuple[int, int] | None = None,
) -> DataSet:
    """Uniform random ids in ``id_range`` (default ``[min(1000, vocab/2), vocab)``: past the special and unused
    tokens, as the export checks draw them), every position attended."""
    _check_shape(batch_size, seq_len, batches)
    low, high = id_range or (min(1000, vocab_size // 2), vocab_size)
    if not 0 <= low < high <= vocab_size:
        raise BadInputError(f"random id range [{low}, {high}) must lie within the vocabulary [0, {vocab_size}); fix --random-ids")
    rng = np.random.default_rng(seed)
    chunks = []
    for _ in range(batches):
        ids = rng.integers(low, high, size=(batch_size, seq_len), dtype=np.int64)
        ones = np.ones_like(ids)
        chunks.append({"input_ids": ids, "attention_mask": ones, "token_type_ids": np.zeros_like(ids)})
    source = DataSource("random", batch_size * batches, batch_size, seq_len, seed=seed, id_range=(low, high))
    return DataSet(source, tuple(chunks))
