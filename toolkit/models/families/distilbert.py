"""DistilBERT (``distilbert``): distilbert-base-uncased, msmarco-distilbert and other distilled encoders.

No token type ids and no pooler; its classification head reads the first token through ``pre_classifier``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.models.families.base import EncoderFamily
from toolkit.models.tokenizers import uncased_wordpiece

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerFast


class DistilBert(EncoderFamily):
    name: ClassVar[str] = "distilbert"
    model_types: ClassVar[tuple[str, ...]] = ("distilbert",)
    shipped_configs: ClassVar[tuple[str, ...]] = ("distilbert-base-uncased",)
    tokenizer_kind: ClassVar[str] = "WordPiece (distilbert-base-uncased's uncased vocabulary, shipped with MiniLM)"
    layers_key: ClassVar[str] = "n_layers"
    ort_model_type: ClassVar[str | None] = "bert"

    def num_heads(self, config: PretrainedConfig) -> int:
        return int(config.n_heads)

    def hidden_size(self, config: PretrainedConfig) -> int:
        return int(config.dim)

    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        return uncased_wordpiece()  # the real vocabulary (the same as bert-base-uncased's)

    def classify(self, module: torch.nn.Module, states: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        import torch

        head: Any = module  # DistilBertForSequenceClassification
        return head.classifier(torch.relu(head.pre_classifier(states[:, 0])))


FAMILY = DistilBert()
