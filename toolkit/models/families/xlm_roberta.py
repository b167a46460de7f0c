"""XLM-RoBERTa (``xlm-roberta``): xlm-roberta-base, multilingual E5 and paraphrase-multilingual models.

RoBERTa's architecture and positions with a SentencePiece (Unigram) vocabulary of 250002 entries.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from toolkit.models.families.roberta import Roberta
from toolkit.models.tokenizers import roberta_style, unigram

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

XLMR_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as xlm-roberta-base's vocabulary has them


class XlmRoberta(Roberta):
    name: ClassVar[str] = "xlm-roberta"
    model_types: ClassVar[tuple[str, ...]] = ("xlm-roberta",)
    shipped_configs: ClassVar[tuple[str, ...]] = ("xlm-roberta-base",)
    tokenizer_kind: ClassVar[str] = "Unigram (SentencePiece-style), counted from data/corpus.txt"

    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        return roberta_style(unigram(corpus, XLMR_SPECIALS, "<unk>", ("<s>", "</s>")))


FAMILY = XlmRoberta()
