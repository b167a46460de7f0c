"""BERT (``bert``): MiniLM, bert-base-uncased, BGE, E5 and most sentence-transformers encoders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.models.families.base import EncoderFamily
from toolkit.models.tokenizers import uncased_wordpiece

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast


class Bert(EncoderFamily):
    name: ClassVar[str] = "bert"
    model_types: ClassVar[tuple[str, ...]] = ("bert",)
    shipped_configs: ClassVar[tuple[str, ...]] = ("bert-base-uncased",)
    tokenizer_kind: ClassVar[str] = "WordPiece (bert-base-uncased's uncased vocabulary, shipped with MiniLM)"
    uses_token_type_ids: ClassVar[bool] = True
    ort_model_type: ClassVar[str | None] = "bert"

    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        return uncased_wordpiece()  # the real vocabulary: no need to train one

    def classify(self, module: torch.nn.Module, states: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        head: Any = module  # BertForSequenceClassification: its classifier reads the pooler's output
        return head.classifier(pooled)


FAMILY = Bert()
