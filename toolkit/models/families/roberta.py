"""RoBERTa (``roberta``): roberta-base, all-distilroberta-v1 and other sentence-transformers on RoBERTa.

Positions start after the padding index (``padding_idx + 1``), so a config's 514 position embeddings hold 512
tokens, and padded tokens must carry the pad id (1) to keep their positions out of the count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from toolkit.models.families.base import EncoderFamily
from toolkit.models.tokenizers import byte_level_bpe, roberta_style

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # ids 0..4, as roberta-base's vocabulary has them


class Roberta(EncoderFamily):
    name: ClassVar[str] = "roberta"
    model_types: ClassVar[tuple[str, ...]] = ("roberta",)
    shipped_configs: ClassVar[tuple[str, ...]] = ("roberta-base",)
    tokenizer_kind: ClassVar[str] = "byte-level BPE trained on data/corpus.txt"
    ort_model_type: ClassVar[str | None] = "bert"

    def max_positions(self, config: PretrainedConfig) -> int:
        return int(config.max_position_embeddings) - int(config.pad_token_id) - 1

    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        return roberta_style(byte_level_bpe(corpus, 50265, ROBERTA_SPECIALS, add_prefix_space=False, template=("<s>", "</s>")))


FAMILY = Roberta()
