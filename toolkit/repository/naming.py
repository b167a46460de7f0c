"""Triton model names of a built model: the contract between the repository, the client and perf.

``minilm_tokenizer`` (TEXT -> tokens), ``minilm_fp16_onnx`` (one engine: ``<name>_<precision>_<runtime
suffix>``), ``minilm_fp16`` / ``minilm_fp16_trt`` (text ensembles: ``<name>_<precision><runtime ensemble
suffix>``), ``<name>_labels`` (label names of a classification head) and ``minilm_fp16_onehop`` (the text
ensemble's work in one Python model, built on request beside the ensemble).
"""

from __future__ import annotations

from toolkit.names import Precision
from toolkit.runtimes import DEFAULT_RUNTIME, RUNTIMES, get_runtime


def tokenizer_model(name: str) -> str:
    """Triton model that turns TEXT into token tensors, e.g. ``minilm_tokenizer``."""
    return f"{name}_tokenizer"


def labels_model(name: str) -> str:
    """Triton model that turns a classifier's label ids into label names, e.g. ``sst2_labels``."""
    return f"{name}_labels"


def engine_model(name: str, precision: Precision | str, runtime: str = DEFAULT_RUNTIME) -> str:
    """Triton model of one engine, e.g. ``minilm_hybrid_onnx`` or ``gpt2_fp16_plan``."""
    return f"{name}_{Precision(precision).value}_{get_runtime(runtime).suffix}"


def ensemble_model(name: str, precision: Precision | str, runtime: str = DEFAULT_RUNTIME) -> str:
    """Text-in ensemble, e.g. ``minilm_hybrid`` (ONNX Runtime) or ``minilm_hybrid_trt`` (TensorRT)."""
    return f"{name}_{Precision(precision).value}{get_runtime(runtime).ensemble_suffix}"


def onehop_model(name: str, precision: Precision | str) -> str:
    """Text in, the ensemble's outputs out, in one Python model, e.g. ``minilm_fp16_onehop``."""
    return f"{name}_{Precision(precision).value}_onehop"


def model_names(name: str) -> set[str]:
    """Every Triton model a build of ``name`` may write (and so may replace): the tokenizer, the labels model, and
    per precision and runtime the engine, the ensemble and the one-hop model."""
    names = {tokenizer_model(name), labels_model(name)}
    for precision in Precision:
        names.add(onehop_model(name, precision))
        for runtime in RUNTIMES:
            names |= {engine_model(name, precision, runtime), ensemble_model(name, precision, runtime)}
    return names
