"""Precision: the policies that turn the FP32 ONNX graph into fp16 and hybrid graphs with explicit casts
(``policy``), and the tools that find where FP16 breaks a model and the cheapest policy that holds:
``inspect`` (the report; ``report_views`` draws it), ``search`` (the policy search), ``policy_file`` (policy
files and the graphs built from them, fused graphs too), ``variants`` (the result table against
onnxconverter-common's ``auto_convert_mixed_precision``), ``emulate`` (FP16 as a GPU stores it, on the CPU),
``costs``, ``data``, ``probe``, ``evaluate``; ``python -m toolkit.precision inspect|search`` (``cli``,
``workflow``)."""

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
