"""Precision: the policies that turn the FP32 ONNX graph into fp16 and hybrid graphs with explicit casts
(``policy``)."""

from toolkit.precision.policy import (
    DEFAULT_KEEP_FP32,
    FP16_MAX,
    fp16_from_fp32,
    fused_variant_from_fp32,
    hybrid_fp32_nodes,
    hybrid_from_fp32,
    node_precisions,
    parse_keep_fp32,
    precision_census,
    save_onnx,
    variant_from_fp32,
)

__all__ = [
    "DEFAULT_KEEP_FP32",
    "FP16_MAX",
    "fp16_from_fp32",
    "fused_variant_from_fp32",
    "hybrid_fp32_nodes",
    "hybrid_from_fp32",
    "node_precisions",
    "parse_keep_fp32",
    "precision_census",
    "save_onnx",
    "variant_from_fp32",
]
