"""Export: PyTorch model -> FP32 ONNX graph with dynamic batch and sequence axes, checked against PyTorch.

Two traps of transformers 5 are handled here:
- the mask: traced 2-D masks get specialised on the example (an all-ones example mask is dropped
  altogether), so the wrapper builds the classic additive 4-D mask itself (causal for decoders), which
  transformers passes through;
- the training mode: ``torch.onnx.export`` restores the *wrapper's* mode onto the whole module tree, so the
  wrapper is put in eval mode too, or the reference would run with dropout.

What a text ensemble returns is computed inside the graph (the model family's ``graph_outputs``: an encoder's
pooled ``sentence_embedding`` and classifier probabilities, a decoder's next token), so the engine is the
ensemble's last compute step (no Python post-processing hop, and GPT-2's full logits never leave the GPU when
only the next token is asked for).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toolkit.artifacts import TensorSpec
from toolkit.errors import ExportMismatchError
from toolkit.measurement.compare import cosine_rows
from toolkit.models.loading import LoadedModel
from toolkit.names import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS
from toolkit.runtimes.onnxruntime import run_onnx

if TYPE_CHECKING:
    import torch

OPSET = 17
# Additive mask value: large enough to zero a softmax weight, small enough to stay finite in FP16.
MASK_VALUE = -10000.0
EXPORT_EXAMPLE_SHAPE = (2, 16)
CHECK_SHAPES = ((1, 7), (3, 40), (4, 129))
MIN_EXPORT_COSINE = 0.99999


def output_specs(model: LoadedModel) -> tuple[TensorSpec, ...]:
    """Graph outputs of ``model`` (its family's), the first one the per-token output fidelity is measured on."""
    return model.family.output_specs(model)


def output_names(model: LoadedModel) -> tuple[str, ...]:
    """Names of ``output_specs``, in graph order."""
    return tuple(spec.name for spec in output_specs(model))


def torch_module(model: LoadedModel) -> torch.nn.Module:
    """The module that is exported, and timed as the PyTorch baseline: takes the engine's inputs (keyword or
    positional), returns the family's graph outputs."""
    import torch

    causal = model.family.causal

    class ExportWrapper(torch.nn.Module):
        """Calls the family's forward with a ready 4-D additive mask; returns a tuple."""

        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, ...]:
            dtype = next(self.module.parameters()).dtype  # FP32 when exported; FP16 when PyTorch eager is timed in FP16
            keep = attention_mask[:, None, None, :].to(dtype)
            if causal:
                length = input_ids.shape[1]
                keep = keep * torch.tril(torch.ones(length, length, dtype=dtype, device=input_ids.device))
            mask = (1.0 - keep) * MASK_VALUE
            return model.family.graph_outputs(model, self.module, input_ids, mask, attention_mask, token_type_ids)

    return ExportWrapper(model.module).eval()


def example_inputs(model: LoadedModel, batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids of one shape with right padding in every other row (masks with zeros matter)."""
    rng = np.random.default_rng(seed)
    low = min(1000, model.vocab_size // 2)
    ids = rng.integers(low, model.vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(0, batch, 2):
        mask[row, max(1, seq // 2 + row) :] = 0
    tensors = {INPUT_IDS: ids, ATTENTION_MASK: mask, TOKEN_TYPE_IDS: np.zeros_like(ids)}
    return {name: tensors[name] for name in model.family.engine_inputs()}


def onnx_from_hf(model: LoadedModel, path: Path) -> Path:
    """Export ``model`` to an FP32 ONNX file at ``path`` with dynamic batch and sequence axes."""
    import torch

    wrapper = torch_module(model)
    names = model.family.engine_inputs()
    example = example_inputs(model, *EXPORT_EXAMPLE_SHAPE)
    args = tuple(torch.from_numpy(example[name]) for name in names)
    outputs = output_names(model)
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    for spec in output_specs(model):
        axes[spec.name] = {0: "batch", 1: "sequence"} if spec.dims[0] == -1 else {0: "batch"}
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=list(names),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


@dataclass(frozen=True)
class ShapeCheck:
    """Agreement of an exported graph with PyTorch at one shape (valid tokens only)."""

    batch: int
    seq: int
    output: str
    cosine_min: float
    max_abs_error: float


def torch_outputs(model: LoadedModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the PyTorch model in FP32 (TF32 off) the way the exported graph does."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    wrapper = torch_module(model)
    args = tuple(torch.from_numpy(inputs[name]) for name in model.family.engine_inputs())
    with torch.no_grad():
        values = wrapper(*args)
    return {name: value.numpy() if not value.is_floating_point() else value.float().numpy() for name, value in zip(output_names(model), values, strict=True)}


def verify_export(model: LoadedModel, path: Path, shapes: tuple[tuple[int, int], ...] = CHECK_SHAPES) -> list[ShapeCheck]:
    """Compare the ONNX graph at ``path`` with PyTorch at shapes other than the export example.

    Raises ExportMismatchError listing every failing (shape, output) when cosine < MIN_EXPORT_COSINE.
    """
    checks: list[ShapeCheck] = []
    for batch, seq in shapes:
        seq = min(seq, model.max_positions)
        inputs = example_inputs(model, batch, seq, seed=batch * 1000 + seq)
        expected = torch_outputs(model, inputs)
        actual = run_onnx(path, inputs)
        valid = inputs[ATTENTION_MASK].astype(bool)
        for name, reference in expected.items():
            if not np.issubdtype(reference.dtype, np.floating):
                continue  # token ids: an argmax of a float output checked here already
            got = actual[name]
            ref_rows, got_rows = (reference[valid], got[valid]) if reference.ndim == 3 else (reference, got)
            checks.append(
                ShapeCheck(batch, seq, name, float(cosine_rows(ref_rows, got_rows).min()), float(np.abs(ref_rows - got_rows).max()))
            )
    failures = [check for check in checks if not check.cosine_min >= MIN_EXPORT_COSINE]
    if failures:
        detail = "; ".join(
            f"{c.output} at batch {c.batch} seq {c.seq}: cosine {c.cosine_min:.6f}, max abs {c.max_abs_error:.3g}" for c in failures
        )
        raise ExportMismatchError(f"exported graph {path.name} disagrees with PyTorch (need cosine >= {MIN_EXPORT_COSINE}): {detail}")
    return checks
