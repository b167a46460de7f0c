"""MPNet (``mpnet``): microsoft/mpnet-base and all-mpnet-base-v2, the most used sentence-transformers model.

RoBERTa-style positions (after the padding index) and a relative position bias added to every layer's attention
scores; no token type ids. Its attention is written by hand in transformers (not through the attention
interface), with the bias added before the mask, so ONNX Runtime's BERT attention fusion does not match it:
the build says so and the attention runs unfused.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from toolkit.models.families.base import EncoderFamily
from toolkit.models.tokenizers import roberta_style, wordpiece

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

MPNET_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4 (mpnet-base puts [UNK] at 3 too)


class MPNet(EncoderFamily):
    name: ClassVar[str] = "mpnet"
    model_types: ClassVar[tuple[str, ...]] = ("mpnet",)
    shipped_configs: ClassVar[tuple[str, ...]] = ("microsoft/mpnet-base",)
    tokenizer_kind: ClassVar[str] = "WordPiece (uncased), counted from data/corpus.txt"
    ort_model_type: ClassVar[str | None] = "bert"
    attention: ClassVar[str] = "eager"

    def attention_implementation(self) -> str:
        return self.attention  # MPNet's attention does not go through transformers' attention interface

    def max_positions(self, config: PretrainedConfig) -> int:
        return int(config.max_position_embeddings) - int(config.pad_token_id) - 1

    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        return roberta_style(wordpiece(corpus, MPNET_SPECIALS, "<unk>", ("<s>", "</s>")))


FAMILY = MPNet()
