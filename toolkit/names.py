"""Names shared by the builder, the repository, the backends, the client and perf.

One place for the contract between stages: model names in the Triton repository and the
tensor names each model family exposes. Everything else derives its names from here.
"""

from __future__ import annotations

from enum import Enum


class Precision(str, Enum):
    """Precision variants; each is an ONNX graph with explicit casts (see toolkit.precision)."""

    FP32 = "fp32"
    FP16 = "fp16"
    HYBRID = "hybrid"


class Family(str, Enum):
    """Model families the toolkit knows how to export and serve."""

    BERT = "bert"
    GPT2 = "gpt2"


class Runtime(str, Enum):
    """Engine runtimes: each has a Triton platform and a builder."""

    ONNXRUNTIME = "onnxruntime"
    TENSORRT = "tensorrt"


PLATFORM_OF_RUNTIME: dict[Runtime, str] = {
    Runtime.ONNXRUNTIME: "onnxruntime_onnx",
    Runtime.TENSORRT: "tensorrt_plan",
}
MODEL_FILE_OF_RUNTIME: dict[Runtime, str] = {
    Runtime.ONNXRUNTIME: "model.onnx",
    Runtime.TENSORRT: "model.plan",
}
RUNTIME_SUFFIX: dict[Runtime, str] = {Runtime.ONNXRUNTIME: "onnx", Runtime.TENSORRT: "plan"}

# Tensor names (Triton inputs/outputs and ONNX graph names alike).
TEXT = "TEXT"
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
TOKEN_TYPE_IDS = "token_type_ids"
TRUNCATED = "truncated"
LAST_HIDDEN_STATE = "last_hidden_state"
POOLER_OUTPUT = "pooler_output"
LOGITS = "logits"
SENTENCE_EMBEDDING = "sentence_embedding"
NEXT_TOKEN_LOGITS = "next_token_logits"
NEXT_TOKEN_ID = "next_token_id"

ENGINE_INPUTS: dict[Family, tuple[str, ...]] = {
    Family.BERT: (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS),
    Family.GPT2: (INPUT_IDS, ATTENTION_MASK),
}


def tokenizer_model(name: str) -> str:
    """Triton model that turns TEXT into token tensors, e.g. ``minilm_tokenizer``."""
    return f"{name}_tokenizer"


def engine_model(name: str, precision: Precision | str, runtime: Runtime | str = Runtime.ONNXRUNTIME) -> str:
    """Triton model of one engine, e.g. ``minilm_hybrid_onnx`` or ``gpt2_fp16_plan``."""
    return f"{name}_{Precision(precision).value}_{RUNTIME_SUFFIX[Runtime(runtime)]}"


def ensemble_model(name: str, precision: Precision | str, runtime: Runtime | str = Runtime.ONNXRUNTIME) -> str:
    """Text-in ensemble, e.g. ``minilm_hybrid`` (ONNX Runtime) or ``minilm_hybrid_trt`` (TensorRT)."""
    base = f"{name}_{Precision(precision).value}"
    return base if Runtime(runtime) is Runtime.ONNXRUNTIME else f"{base}_trt"
