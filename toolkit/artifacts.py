"""What the build hands to repository generation: built engines and the model they serve."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from toolkit.names import Family, Precision, Runtime


@dataclass(frozen=True)
class TensorSpec:
    """One engine output; ``dims`` exclude the batch axis, -1 marks a dynamic axis."""

    name: str
    dims: tuple[int, ...]
    data_type: str = "TYPE_FP32"  # Triton's name of the element type


@dataclass(frozen=True)
class EngineArtifact:
    """One built engine file (``model.onnx`` or ``model.plan``) of one precision variant."""

    precision: Precision
    runtime: Runtime
    path: Path
    outputs: tuple[TensorSpec, ...]


@dataclass
class ServedModel:
    """A model as the repository serves it: tokenizer, engines per precision, shapes."""

    name: str  # short name used in Triton model names, e.g. "minilm"
    family: Family
    tokenizer_dir: Path  # folder written by tokenizer.save_pretrained (tokenizer.json inside)
    max_batch_size: int
    max_seq_len: int
    hidden_size: int
    vocab_size: int
    min_seq_len: int = 1  # the tokenizer pads shorter batches up to it (TensorRT profile minimum)
    engines: list[EngineArtifact] = field(default_factory=list)
    manifest: dict[str, object] = field(default_factory=dict)
