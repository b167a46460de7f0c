"""Inputs for fidelity runs: random token ids and real text, tokenized into engine batches.

Real text comes from the files shipped in ``data/`` (``corpus.txt``, ``sentiment.tsv``) or, with
``dataset="hub"``, from Hugging Face ``datasets`` (WikiText-2 and GLUE SST-2) when that package
and the network are available.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from toolkit.errors import BadInputError, DependencyMissingError, ToolkitError
from toolkit.names import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from toolkit.text_packing import packed_lines

if TYPE_CHECKING:
    from tokenizers import Tokenizer

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
CORPUS_FILE = DATA_DIR / "corpus.txt"
SENTIMENT_FILE = DATA_DIR / "sentiment.tsv"
Dataset = Literal["shipped", "hub"]
DATASETS: tuple[str, ...] = ("shipped", "hub")
InputKind = Literal["random", "text", "sentences"]
INPUT_KINDS: tuple[str, ...] = ("random", "text", "sentences")


# -- loaders --------------------------------------------------------------------------------------


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise BadInputError(f"dataset {dataset!r} is not one of {', '.join(DATASETS)}; pass --dataset shipped or hub")


def _hub_split(path: str, config: str, split: str) -> Any:
    """One split of a Hugging Face dataset; a missing package or network is a one-line error."""
    try:
        import datasets
    except ImportError as error:
        raise DependencyMissingError(
            "--dataset hub needs the Hugging Face `datasets` package: pip install datasets; or use --dataset shipped"
        ) from error
    try:
        return datasets.load_dataset(path, config, split=split)
    except Exception as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ToolkitError(f"could not load {path}/{config} ({split}) from the Hugging Face Hub: {first}; use --dataset shipped") from error


def read_corpus(path: Path = CORPUS_FILE) -> list[str]:
    """Non-empty, stripped lines of a plain-text corpus file."""
    if not path.is_file():
        raise BadInputError(f"corpus file {path} does not exist; restore data/corpus.txt")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_sentiment(path: Path = SENTIMENT_FILE) -> list[tuple[int, str]]:
    """``(label, sentence)`` pairs of a ``label<TAB>sentence`` file; labels must be 0 or 1."""
    if not path.is_file():
        raise BadInputError(f"sentiment file {path} does not exist; restore data/sentiment.tsv")
    rows: list[tuple[int, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, sentence = line.partition("\t")
        if not sep or label not in ("0", "1") or not sentence.strip():
            raise BadInputError(f"{path}:{number}: expected 'label<TAB>sentence' with label 0 or 1, got {line!r}")
        rows.append((int(label), sentence.strip()))
    return rows


def load_corpus(dataset: Dataset = "shipped") -> list[str]:
    """Running text: shipped ``data/corpus.txt`` or WikiText-2 (raw, test split) from the Hub."""
    _check_dataset(dataset)
    if dataset == "shipped":
        return read_corpus()
    split = _hub_split("wikitext", "wikitext-2-raw-v1", "test")
    return [line.strip() for line in split["text"] if line.strip() and not line.strip().startswith("=")]


def load_sentiment(dataset: Dataset = "shipped") -> list[tuple[int, str]]:
    """Labelled sentences: shipped ``data/sentiment.tsv`` or GLUE SST-2 (validation split) from the Hub."""
    _check_dataset(dataset)
    if dataset == "shipped":
        return read_sentiment()
    split = _hub_split("glue", "sst2", "validation")
    return [(int(label), sentence.strip()) for label, sentence in zip(split["label"], split["sentence"], strict=True)]


# -- batches ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenBatch:
    """One request's token tensors (INT64 ``[batch, seq]``) and where they came from."""

    kind: str
    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        shape = self.input_ids.shape
        if len(shape) != 2 or self.attention_mask.shape != shape or self.token_type_ids.shape != shape:
            raise BadInputError(f"token tensors must share one [batch, seq] shape; input_ids is {shape}")

    def inputs(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The tensors an engine (or the reference) takes, by name."""
        tensors = {INPUT_IDS: self.input_ids, ATTENTION_MASK: self.attention_mask, TOKEN_TYPE_IDS: self.token_type_ids}
        unknown = [name for name in names if name not in tensors]
        if unknown:
            raise BadInputError(f"inputs {unknown} are not token tensors; expected some of {sorted(tensors)}")
        return {name: tensors[name] for name in names}


def _check_shape(batch: int, seq: int) -> None:
    if batch < 1 or seq < 2:
        raise BadInputError(f"batch={batch}, seq={seq}: need batch >= 1 and seq >= 2; fix --batch-sizes/--seq-lens")


def random_batch(batch: int, seq: int, vocab_size: int, rng: np.random.Generator) -> TokenBatch:
    """Uniform random ids in ``[0, vocab_size)``, every position attended (Polygraphy's default data)."""
    _check_shape(batch, seq)
    ids = rng.integers(0, vocab_size, size=(batch, seq), dtype=np.int64)
    ones = np.ones((batch, seq), dtype=np.int64)
    return TokenBatch("random", ids, ones, np.zeros_like(ones))


def plain_copy(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of ``tokenizer`` without the padding/truncation its ``tokenizer.json`` may carry."""
    from tokenizers import Tokenizer

    local = Tokenizer.from_str(tokenizer.to_str())
    local.no_padding()
    local.no_truncation()
    return local


def tokenizer_pad_id(tokenizer: Tokenizer) -> int:
    """The id padded positions carry: the padding a build saved in ``tokenizer.json``, else ``[PAD]``, else 0."""
    if tokenizer.padding:
        return int(tokenizer.padding["pad_id"])
    found = tokenizer.token_to_id("[PAD]")
    return found if found is not None else 0


def encode_batch(tokenizer: Tokenizer, texts: Sequence[str], seq: int, kind: str = "text") -> TokenBatch:
    """Tokenize ``texts`` with special tokens, truncated and right-padded to exactly ``seq`` tokens."""
    _check_shape(len(texts), seq)
    pad_id = tokenizer_pad_id(tokenizer)
    local = plain_copy(tokenizer)
    local.enable_truncation(max_length=seq)
    local.enable_padding(length=seq, pad_id=pad_id)
    encodings = local.encode_batch(list(texts))
    return TokenBatch(
        kind,
        np.array([e.ids for e in encodings], dtype=np.int64),
        np.array([e.attention_mask for e in encodings], dtype=np.int64),
        np.array([e.type_ids for e in encodings], dtype=np.int64),
    )


def packed_texts(lines: Sequence[str], tokenizer: Tokenizer, count: int, seq: int, start: int = 0) -> list[str]:
    """``count`` texts, each of consecutive lines (wrapping round) joined until it has >= ``seq`` tokens."""
    if not lines:
        raise BadInputError("the corpus is empty; restore data/corpus.txt")
    lengths = [len(e.ids) for e in plain_copy(tokenizer).encode_batch(list(lines), add_special_tokens=False)]
    return packed_lines(lines, lengths, count, seq, start)


def make_batches(
    kind: str,
    batch: int,
    seq: int,
    requests: int,
    tokenizer: Tokenizer,
    dataset: Dataset = "shipped",
    seed: int = 0,
) -> list[TokenBatch]:
    """``requests`` batches of one input kind: ``random`` ids, packed corpus ``text``, or labelled ``sentences``."""
    if kind not in INPUT_KINDS:
        raise BadInputError(f"input kind {kind!r} is not one of {', '.join(INPUT_KINDS)}; fix --inputs")
    if requests < 1:
        raise BadInputError(f"requests={requests}: need at least 1; fix --requests")
    if kind == "random":
        rng = np.random.default_rng(seed)
        return [random_batch(batch, seq, tokenizer.get_vocab_size(), rng) for _ in range(requests)]
    if kind == "text":
        texts = packed_texts(load_corpus(dataset), tokenizer, batch * requests, seq)
        return [encode_batch(tokenizer, texts[i * batch : (i + 1) * batch], seq, kind) for i in range(requests)]
    rows = load_sentiment(dataset)
    picked = [rows[i % len(rows)] for i in range(batch * requests)]
    batches = []
    for i in range(requests):
        chunk = picked[i * batch : (i + 1) * batch]
        encoded = encode_batch(tokenizer, [sentence for _, sentence in chunk], seq, kind)
        labels = np.array([label for label, _ in chunk], dtype=np.int64)
        batches.append(TokenBatch(kind, encoded.input_ids, encoded.attention_mask, encoded.token_type_ids, labels))
    return batches
