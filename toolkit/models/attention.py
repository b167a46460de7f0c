"""Attention written the way ONNX Runtime's fusions recognise it, for encoder families' exports."""

from __future__ import annotations

from typing import Any

CLASSIC_ATTENTION = "onnx_classic"


def register_classic_attention() -> str:
    """Register (once) attention written as ``softmax(QK^T / sqrt(d) + mask) V``; returns its name.

    transformers 5's eager attention multiplies by ``1/sqrt(d)``: with an additive mask that is also a Mul,
    ONNX Runtime's attention fusion matches the wrong Mul and fuses nothing. Dividing, as BERT always did,
    exports the pattern the fusion recognises. The arithmetic is the same.
    """
    import torch
    from transformers import AttentionInterface

    def classic_attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        divisor = (1.0 / scaling) if scaling else float(query.size(-1)) ** 0.5
        weights = torch.matmul(query, key.transpose(2, 3)) / divisor
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = torch.nn.functional.softmax(weights, dim=-1)
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    AttentionInterface.register(CLASSIC_ATTENTION, classic_attention)
    return CLASSIC_ATTENTION
