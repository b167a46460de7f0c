"""Stress variants of a model for fidelity studies: an outlier channel in the residual stream.

Large-magnitude channels in the residual stream are what makes full FP16 overflow in real transformers.
``add_outlier_channel`` plants one on purpose: each embedding table whose sum enters the residual stream (the
family's ``outlier_tables``: BERT's word, position and token-type tables) gets ``value`` in one channel, so
their sum entering the first LayerNorm is ``tables * value``, beyond FP16's 65504 for BERT at ``value`` >
21835, while every single weight stays representable in FP16.
"""

from __future__ import annotations

from toolkit.errors import BadInputError
from toolkit.models.loading import LoadedModel
from toolkit.precision.policy import FP16_MAX


def add_outlier_channel(model: LoadedModel, value: float, channel: int = 0) -> LoadedModel:
    """Set ``channel`` of every embedding table of the family's residual stream to ``value`` (in place)."""
    import torch

    if not 0 < abs(value) <= FP16_MAX:
        raise BadInputError(f"--outlier {value} must be non-zero and within FP16's range (|value| <= {FP16_MAX})")
    tables = model.family.outlier_tables(model.module)
    with torch.no_grad():
        for table in tables:
            table.weight[:, channel] = value
    model.provenance["outlier_channel"] = {"channel": channel, "value": value, "tables": len(tables)}
    return model
