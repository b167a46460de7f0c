"""Stress variants of a model for fidelity studies: an outlier channel in the residual stream.

Large-magnitude channels in the residual stream are what makes full FP16 overflow in real transformers.
``add_outlier_channel`` plants one on purpose: each embedding table (word, position, token type) gets
``value`` in one channel, so their sum entering the first LayerNorm is ``3 * value``, beyond FP16's 65504
for ``value`` > 21835, while every single weight stays representable in FP16.
"""

from __future__ import annotations

from typing import Any

from toolkit.errors import BadInputError
from toolkit.models.loading import LoadedModel
from toolkit.names import Family
from toolkit.precision.policy import FP16_MAX


def add_outlier_channel(model: LoadedModel, value: float, channel: int = 0) -> LoadedModel:
    """Set ``channel`` of every BERT embedding table to ``value`` (in place); returns ``model``."""
    import torch

    if model.family is not Family.BERT:
        raise BadInputError(
            f"--outlier applies to BERT models (embeddings feed a LayerNorm directly); '{model.name}' is {model.family.value}"
        )
    if not 0 < abs(value) <= FP16_MAX:
        raise BadInputError(f"--outlier {value} must be non-zero and within FP16's range (|value| <= {FP16_MAX})")
    base: Any = getattr(model.module, "bert", model.module)
    embeddings = base.embeddings
    with torch.no_grad():
        for table in (embeddings.word_embeddings, embeddings.position_embeddings, embeddings.token_type_embeddings):
            table.weight[:, channel] = value
    model.provenance["outlier_channel"] = {"channel": channel, "value": value}
    return model
