"""What the build hands to repository generation: built engines and the model they serve."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.names import Precision


@dataclass(frozen=True)
class TensorSpec:
    """One engine output; ``dims`` exclude the batch axis, -1 marks a dynamic axis."""

    name: str
    dims: tuple[int, ...]
    data_type: str = "TYPE_FP32"  # Triton's name of the element type


@dataclass(frozen=True)
class EngineArtifact:
    """One built engine file (``model.onnx``, ``model.plan``...) of one precision variant and runtime."""

    precision: Precision
    runtime: str  # a name in toolkit.runtimes.RUNTIMES
    path: Path
    outputs: tuple[TensorSpec, ...]


@dataclass
class ServedModel:
    """A model as the repository serves it: tokenizer, engines per precision, what the ensembles return.

    Everything family-specific is already decided here (by the build, from the model's family): the token
    tensors the engines take, what a text ensemble returns, the label names of a classifier.
    """

    name: str  # short name used in Triton model names, e.g. "minilm"
    family: str  # the family's name (manifest and tokenizer parameters; nothing here branches on it)
    tokenizer_dir: Path  # folder written by tokenizer.save_pretrained (tokenizer.json inside)
    engine_inputs: tuple[str, ...]  # token tensors, in graph order (token_type_ids or not)
    ensemble_outputs: tuple[str, ...]  # what a text ensemble returns besides ``truncated``
    max_batch_size: int
    max_seq_len: int
    min_seq_len: int = 1  # the tokenizer pads shorter batches up to it (TensorRT profile minimum)
    pad_id: int = 0  # the id padded positions carry
    lowercase: bool = False  # the tokenizer model lowercases texts first (sentence-transformers' do_lower_case)
    labels: dict[int, str] = field(default_factory=dict)  # a classifier's label names; empty otherwise
    engines: list[EngineArtifact] = field(default_factory=list)
    manifest: dict[str, object] = field(default_factory=dict)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (engines can be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
