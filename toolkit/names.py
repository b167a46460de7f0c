"""Names shared by the builder, the repository, the backends, the client and perf: the precision variants
and the tensor names every model exposes. Triton model names (which depend on the runtime) are made by
``toolkit.repository.naming``; model families and runtimes are plug-ins (``toolkit.models.families``,
``toolkit.runtimes``).
"""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    """Precision variants; each is an ONNX graph with explicit casts (see toolkit.precision)."""

    FP32 = "fp32"
    FP16 = "fp16"
    HYBRID = "hybrid"
    AUTO = "auto"  # FP16 but for the nodes a searched (or given) precision policy keeps FP32


# What a build makes unless told otherwise; ``auto`` is asked for (it needs a search or a policy file).
DEFAULT_PRECISIONS: tuple[Precision, ...] = (Precision.FP32, Precision.FP16, Precision.HYBRID)


# Tensor names (Triton inputs/outputs and ONNX graph names alike).
TEXT = "TEXT"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
TRUNCATED = "truncated"
LAST_HIDDEN_STATE = "last_hidden_state"
POOLER_OUTPUT = "pooler_output"
SENTENCE_EMBEDDING = "sentence_embedding"
LOGITS = "logits"
PROBABILITIES = "probabilities"
LABEL_ID = "label_id"
LABEL = "label"
NEXT_TOKEN_LOGITS = "next_token_logits"
NEXT_TOKEN_ID = "next_token_id"
