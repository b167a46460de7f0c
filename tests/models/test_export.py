"""Export correctness: the ONNX graph matches PyTorch at shapes other than the tracing example."""

from __future__ import annotations

from pathlib import Path

import fidelity_floors as floors
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from toolkit.errors import ExportMismatchError
from toolkit.models.export import EXPORT_EXAMPLE_SHAPE, onnx_from_hf, verify_export
from toolkit.models.loading import LoadedModel

SHAPES = ((1, 7), (3, 40), (2, 97))


@pytest.mark.parametrize("fixture", ["minilm", "tiny_gpt2", "tiny_bert"])
def test_export_matches_pytorch_when_shapes_differ_from_example(fixture: str, request: pytest.FixtureRequest, export_dir: Path) -> None:
    model: LoadedModel = request.getfixturevalue(fixture)
    path = onnx_from_hf(model, export_dir / f"{fixture}.onnx")
    checks = verify_export(model, path, SHAPES)
    assert {(c.batch, c.seq) for c in checks} == set(SHAPES)
    assert all(shape != EXPORT_EXAMPLE_SHAPE for shape in SHAPES)
    print(f"{fixture}: 1 - worst cosine against PyTorch {max(1 - c.cosine_min for c in checks):.3g}")
    assert min(c.cosine_min for c in checks) >= floors.FP32_REORDERED  # far above the build's own bar, MIN_EXPORT_COSINE
    assert max(c.max_abs_error for c in checks) < 1e-3
    graph = onnx.load(str(path))
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "sequence"], "batch and sequence axes must be dynamic"


def test_verify_export_raises_when_graph_disagrees(minilm: LoadedModel, export_dir: Path) -> None:
    path = onnx_from_hf(minilm, export_dir / "minilm_good.onnx")
    graph = onnx.load(str(path))
    weight = next(init for init in graph.graph.initializer if len(init.dims) == 2 and init.dims[0] == init.dims[1])
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * -1.0, weight.name))
    broken = export_dir / "minilm_broken.onnx"
    onnx.save(graph, str(broken))
    with pytest.raises(ExportMismatchError) as caught:
        verify_export(minilm, broken, ((1, 9), (2, 33)))
    # Every failing shape is reported, not just the first.
    message = str(caught.value)
    assert "batch 1 seq 9" in message and "batch 2 seq 33" in message


def test_padding_rows_do_not_change_valid_tokens(minilm: LoadedModel, export_dir: Path) -> None:
    from toolkit.runtimes.onnxruntime import run_onnx

    path = onnx_from_hf(minilm, export_dir / "minilm_pad.onnx")
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    short = run_onnx(path, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    padded_ids = np.concatenate([ids, np.zeros((1, 20), dtype=np.int64)], axis=1)
    mask = (padded_ids > 0).astype(np.int64)
    padded = run_onnx(path, {"input_ids": padded_ids, "attention_mask": mask, "token_type_ids": np.zeros_like(padded_ids)})
    np.testing.assert_allclose(padded["last_hidden_state"][:, :4], short["last_hidden_state"], atol=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_gpt2"])
def test_in_graph_ensemble_outputs_match_numpy_when_rows_are_padded(fixture: str, request: pytest.FixtureRequest, export_dir: Path) -> None:
    """sentence_embedding = masked mean of the states; next token = logits at each row's last attended position."""
    from toolkit.models.export import example_inputs
    from toolkit.runtimes.onnxruntime import run_onnx

    model: LoadedModel = request.getfixturevalue(fixture)
    inputs = example_inputs(model, 4, 24)  # rows 0 and 2 are right-padded
    assert not inputs["attention_mask"].all()
    out = run_onnx(onnx_from_hf(model, export_dir / f"{fixture}_tail.onnx"), inputs)
    mask = inputs["attention_mask"].astype(np.float32)
    if fixture == "tiny_bert":
        expected = (out["last_hidden_state"] * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        np.testing.assert_allclose(out["sentence_embedding"], expected, atol=1e-5)
    else:
        last = mask.sum(1).astype(int) - 1
        expected = out["logits"][np.arange(4), last]
        np.testing.assert_allclose(out["next_token_logits"], expected, atol=1e-5)
        assert out["next_token_id"].dtype == np.int64 and out["next_token_id"][:, 0].tolist() == expected.argmax(-1).tolist()
