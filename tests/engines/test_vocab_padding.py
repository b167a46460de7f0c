"""The vocabulary projection padded to aligned widths: same outputs, wider weight, and the way back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from toolkit.build import fused_graph
from toolkit.graphs.vocab_padding import pad_vocab_projection, unpad_vocab_projection
from toolkit.models.export import example_inputs, onnx_from_hf
from toolkit.models.loading import LoadedModel
from toolkit.names import Precision
from toolkit.precision import fused_variant_from_fp32, save_onnx
from toolkit.runtimes.onnxruntime import run_onnx


def _projection_width(model: onnx.ModelProto) -> int:
    weights = {init.name: init for init in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    node = producers["logits"]
    while node.op_type != "MatMul":  # Slice, or the Cast back to FP32
        node = producers[node.input[0]]
    return int(weights[node.input[1]].dims[1])


def test_fused_gpt2_pads_its_5000_word_projection_to_5056_and_keeps_every_output(tiny_gpt2: LoadedModel, tmp_path: Path) -> None:
    exported = onnx_from_hf(tiny_gpt2, tmp_path / "fp32.onnx")
    fused, stats = fused_graph(tiny_gpt2, exported, tmp_path / "fused.onnx")
    assert stats["PaddedVocabProjection"] == 1
    graph = onnx.load(str(fused))
    assert _projection_width(graph) == 5056
    inputs = example_inputs(tiny_gpt2, 3, 20)
    reference, got = run_onnx(exported, inputs), run_onnx(fused, inputs)
    assert got["logits"].shape == reference["logits"].shape == (3, 20, 5000)
    np.testing.assert_allclose(got["logits"], reference["logits"], atol=1e-4)
    np.testing.assert_array_equal(got["next_token_id"], reference["next_token_id"])


def test_unpad_restores_the_unpadded_projection_after_fp16_conversion(tiny_gpt2: LoadedModel, tmp_path: Path) -> None:
    fused, _ = fused_graph(tiny_gpt2, onnx_from_hf(tiny_gpt2, tmp_path / "fp32.onnx"), tmp_path / "fused.onnx")
    fp16 = fused_variant_from_fp32(onnx.load(str(fused)), Precision.FP16)
    padded = save_onnx(fp16, tmp_path / "fp16.onnx")
    assert unpad_vocab_projection(fp16) == 1
    assert _projection_width(fp16) == 5000 and not [node for node in fp16.graph.node if node.name.endswith("_vocab_slice")]
    inputs = example_inputs(tiny_gpt2, 2, 16)
    before, after = run_onnx(padded, inputs), run_onnx(save_onnx(fp16, tmp_path / "fp16_unpadded.onnx"), inputs)
    np.testing.assert_allclose(after["next_token_logits"], before["next_token_logits"], atol=2e-3)
    np.testing.assert_array_equal(after["next_token_id"], before["next_token_id"])


def test_pad_vocab_projection_leaves_an_encoder_without_vocabulary_output_alone(tiny_bert: LoadedModel, tmp_path: Path) -> None:
    graph = onnx.load(str(onnx_from_hf(tiny_bert, tmp_path / "bert.onnx")))
    before = graph.SerializeToString()
    assert pad_vocab_projection(graph) == 0
    assert graph.SerializeToString() == before
