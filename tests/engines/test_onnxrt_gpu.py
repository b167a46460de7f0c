"""ONNX Runtime on the GPU: fused graphs, CUDA graphs and FP16 speed (skipped without a CUDA provider)."""

from __future__ import annotations

from pathlib import Path

import fidelity_floors as floors
import pytest

from toolkit.build import fused_graph
from toolkit.models.export import example_inputs, onnx_from_hf
from toolkit.models.loading import LoadedModel
from toolkit.names import Precision
from toolkit.precision import fused_variant_from_fp32, save_onnx
from toolkit.runtimes.onnxruntime import available_providers

needs_cuda = pytest.mark.skipif(
    "CUDAExecutionProvider" not in available_providers(), reason="no CUDA execution provider (needs onnxruntime-gpu and an NVIDIA GPU)"
)


def test_fused_bert_graph_has_attention_and_fp32_layernorms_in_hybrid(tiny_bert: LoadedModel, tmp_path: Path) -> None:
    import onnx

    from toolkit.precision import precision_census

    fused, stats = fused_graph(tiny_bert, onnx_from_hf(tiny_bert, tmp_path / "fp32.onnx"), tmp_path / "fused.onnx")
    assert stats.get("Attention") == 2 and stats.get("SkipLayerNormalization") == 4
    census = precision_census(fused_variant_from_fp32(onnx.load(str(fused)), Precision.HYBRID))
    assert census["Attention"] == {"fp16": 2}
    assert census["SkipLayerNormalization"] == {"fp32": 4} and census["EmbedLayerNormalization"] == {"fp32": 1}


def test_fused_gpt2_graph_has_one_causal_attention_per_layer_and_matches_export(tiny_gpt2: LoadedModel, tiny_bert: LoadedModel, tmp_path: Path) -> None:
    """transformers 5's GPT-2 attention, which ONNX Runtime's optimizer leaves unfused, becomes Attention(unidirectional=1)."""
    import numpy as np
    import onnx

    from toolkit.graphs.causal_attention import fuse_causal_attention
    from toolkit.measurement.compare import cosine_rows
    from toolkit.runtimes.onnxruntime import run_onnx

    exported = onnx_from_hf(tiny_gpt2, tmp_path / "fp32.onnx")
    fused, stats = fused_graph(tiny_gpt2, exported, tmp_path / "fused.onnx")
    graph = onnx.load(str(fused)).graph
    attention = [node for node in graph.node if node.op_type == "Attention"]
    assert stats["Attention"] == len(attention) == 2
    assert all(onnx.helper.get_attribute_value(a) == 1 for node in attention for a in node.attribute if a.name == "unidirectional")
    assert not [node for node in graph.node if node.op_type == "Softmax"]  # the 4-D mask and the unfused scores are gone
    inputs = example_inputs(tiny_gpt2, 3, 20)  # rows 0 and 2 right-padded
    reference, got = run_onnx(exported, inputs), run_onnx(fused, inputs)
    valid = inputs["attention_mask"].astype(bool)
    assert cosine_rows(reference["logits"][valid], got["logits"][valid]).min() >= floors.FP32_REORDERED
    np.testing.assert_array_equal(reference["next_token_id"], got["next_token_id"])
    # A graph without GPT-2's packed projection (BERT) is left as it is.
    bert = onnx.load(str(onnx_from_hf(tiny_bert, tmp_path / "bert.onnx")))
    assert fuse_causal_attention(bert, 4, 128) == 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("fixture", "family", "states"), [("tiny_bert", "bert", "last_hidden_state"), ("tiny_gpt2", "gpt2", "logits")])
@pytest.mark.parametrize("precision", [Precision.FP16, Precision.HYBRID])
def test_fused_variant_on_cuda_matches_fp32(
    precision: Precision, fixture: str, family: str, states: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Every fused graph the GPU serves (GPT-2's with its causal Attention too) agrees with FP32 on CUDA."""
    import onnx

    from toolkit.measurement.compare import cosine_rows
    from toolkit.runtimes.onnxruntime import session_for

    model: LoadedModel = request.getfixturevalue(fixture)
    exported = onnx_from_hf(model, tmp_path / "fp32.onnx")
    fused, _ = fused_graph(model, exported, tmp_path / "fused.onnx")
    inputs = example_inputs(model, 4, 96)
    outputs = {}
    for variant in (Precision.FP32, precision):
        path = save_onnx(fused_variant_from_fp32(onnx.load(str(fused)), variant), tmp_path / f"{variant.value}.onnx")
        outputs[variant] = session_for(path, "cuda").run([states], inputs)[0]
    valid = inputs["attention_mask"].astype(bool)
    unfused_on_cpu = session_for(exported, "cpu").run([states], inputs)[0]  # the CUDA kernels' masking, against the export's
    # No GPU run recorded this number (the builds' fused-vs-export check, 1.0000000, runs on the CPU): the floor stays
    # loose enough for ONNX Runtime's CUDA kernels, which may use TF32, until a GPU run measures it.
    assert cosine_rows(unfused_on_cpu[valid], outputs[Precision.FP32][valid]).min() >= 0.9999
    # The README's GPU grid (BERT-base, GPT-2 on H100/H200) less one order of magnitude: see tests/fidelity_floors.py.
    assert cosine_rows(outputs[Precision.FP32][valid], outputs[precision][valid]).min() >= floors.GPU[precision.value]


@pytest.mark.gpu
@needs_cuda
def test_device_runner_matches_plain_runs_when_graphs_replay_new_inputs(tiny_bert: LoadedModel, tmp_path: Path) -> None:
    """The served path (cuda_graphs.DeviceRunner) matches a plain CUDA run for every shape, replay after replay."""
    import numpy as np

    from toolkit.runtimes.onnxruntime import session_for
    from toolkit.runtimes.ort_device import DeviceRunner

    fused, _ = fused_graph(tiny_bert, onnx_from_hf(tiny_bert, tmp_path / "fp32.onnx"), tmp_path / "fused.onnx")
    runner = DeviceRunner(session_for(fused, "cuda", cuda_graph=True), max_graphs=2)
    plain = session_for(fused, "cuda")
    for seed, (batch, seq) in enumerate([(1, 16), (4, 32), (1, 16), (2, 8), (4, 32)]):  # (2, 8): past the graph budget
        inputs = example_inputs(tiny_bert, batch, seq, seed=seed)
        got = runner.run(inputs)
        expected = plain.run(None, inputs)
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, atol=1e-4)
    assert len(runner.slots) == 2 and runner.graphs == 2


@pytest.mark.gpu
@needs_cuda
def test_device_runner_pads_batches_to_powers_of_two_and_returns_only_the_real_rows(tiny_bert: LoadedModel, tmp_path: Path) -> None:
    """Batch buckets: 3, 4 and then 2, 1 rows replay the graphs of 4, 2 and 1 rows; each answer has its own rows only."""
    import numpy as np

    from toolkit.runtimes.onnxruntime import session_for
    from toolkit.runtimes.ort_device import DeviceRunner

    fused, _ = fused_graph(tiny_bert, onnx_from_hf(tiny_bert, tmp_path / "fp32.onnx"), tmp_path / "fused.onnx")
    runner = DeviceRunner(session_for(fused, "cuda", cuda_graph=True), max_graphs=8, batch_buckets="pow2")
    plain = session_for(fused, "cuda")
    for seed, batch in enumerate([3, 4, 3, 2, 1]):
        inputs = example_inputs(tiny_bert, batch, 16, seed=seed)
        got = runner.run(inputs)
        for g, e in zip(got, plain.run(None, inputs), strict=True):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, atol=1e-4)
    assert sorted(shape[0][1][0] for shape in runner.slots) == [1, 2, 4]


@pytest.mark.parametrize(("fixture", "family", "heads", "hidden"), [("tiny_bert", "bert", 4, 128), ("tiny_gpt2", "gpt2", 4, 128)])
@pytest.mark.parametrize("precision", [Precision.FP16, Precision.HYBRID])
def test_fused_variants_keep_fp32_outputs_and_ensemble_tail_when_converted(
    fixture: str, family: str, heads: int, hidden: int, precision: Precision, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The fused graphs the GPU serves keep every export output with its type, and agree with FP32 (here on the CPU)."""
    import numpy as np
    import onnx

    from toolkit.measurement.compare import cosine_rows
    from toolkit.runtimes.onnxruntime import run_onnx

    model: LoadedModel = request.getfixturevalue(fixture)
    exported = onnx_from_hf(model, tmp_path / "fp32.onnx")
    fused, _ = fused_graph(model, exported, tmp_path / "fused.onnx")
    variant = save_onnx(fused_variant_from_fp32(onnx.load(str(fused)), precision), tmp_path / "variant.onnx")
    types = {o.name: o.type.tensor_type.elem_type for o in onnx.load(str(variant)).graph.output}
    assert types == {o.name: o.type.tensor_type.elem_type for o in onnx.load(str(exported)).graph.output}
    inputs = example_inputs(model, 3, 20)
    reference, got = run_onnx(exported, inputs), run_onnx(variant, inputs)
    tail = "sentence_embedding" if family == "bert" else "next_token_logits"
    cosine = float(cosine_rows(reference[tail], got[tail]).min())
    print(f"{family} {precision.value} fused, {tail} cosine against the export: {cosine:.10f}")
    assert cosine >= floors.FUSED_TAIL[family, precision.value] and np.isfinite(got[tail]).all()


def test_fused_gpt2_attention_reads_key_lengths_not_the_2d_mask(tiny_gpt2: LoadedModel, tmp_path: Path) -> None:
    """The fused causal Attention takes its padding as per-row key lengths (the 2-D mask's cast is gone), and
    agrees with the export on right-padded rows (the test above), which is what the tokenizer model sends."""
    import onnx

    from toolkit.graphs.causal_attention import KEY_LENGTHS, MASK_INT32, key_lengths_mask

    fused, stats = fused_graph(tiny_gpt2, onnx_from_hf(tiny_gpt2, tmp_path / "fp32.onnx"), tmp_path / "fused.onnx")
    model = onnx.load(str(fused))
    attention = [node for node in model.graph.node if node.op_type == "Attention"]
    assert stats["AttentionKeyLengths"] == 2 and [node.input[3] for node in attention] == [KEY_LENGTHS] * 2
    assert MASK_INT32 not in {name for node in model.graph.node for name in [*node.input, *node.output]}
    assert key_lengths_mask(model) == 0  # nothing left to change
