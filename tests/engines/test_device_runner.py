"""The served engine runner's I/O binding (``toolkit.runtimes.ort_device.DeviceRunner``) on the CPU provider: packed
inputs and batch buckets are binding logic, the same on either device (the CUDA runs are in test_onnxrt_gpu.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.models.export import example_inputs, onnx_from_hf
from toolkit.models.loading import LoadedModel
from toolkit.runtimes.ort_device import DeviceRunner, bucket_rows, bucket_spelling, bucket_step, cpu_session


def test_runner_packs_same_shaped_inputs_into_one_buffer_and_answers_as_a_plain_run(tiny_bert: LoadedModel, tmp_path: Path) -> None:
    """Token ids, mask and type ids in one buffer, bound by slices: batches of 3, 4, 3 and 1 rows (buckets of 4, 4, 4
    and 1, copies of the last row padding them) answer as the plain session does, and shapes seen again reuse
    their slot with new inputs copied in."""
    path = onnx_from_hf(tiny_bert, tmp_path / "fp32.onnx")
    plain = cpu_session(str(path), threads=1)
    runner = DeviceRunner(cpu_session(str(path), threads=1), max_graphs=4, batch_buckets="pow2", device="cpu")
    for seed, batch in enumerate([3, 4, 3, 1]):
        inputs = example_inputs(tiny_bert, batch, 16, seed=seed)
        got = runner.run(inputs)
        for g, e in zip(got, plain.run(None, inputs), strict=True):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, atol=1e-5)
    assert sorted(key[0][1][0] for key in runner.slots) == [1, 4]
    assert all(slot.packed is not None and not slot.inputs for slot in runner.slots.values())


def test_a_bucket_step_pads_to_powers_of_two_up_to_it_then_to_its_multiples(tiny_bert: LoadedModel, tmp_path: Path) -> None:
    """Step 8: 3 rows -> 4, 9 -> 16, 17 -> 24, 26 -> 32, 33 -> 40 (powers of two: 32, 32, 64); each answer keeps its own
    rows and equals the plain session's."""
    assert [bucket_rows(rows, bucket_step("8")) for rows in (1, 3, 8, 9, 17, 26, 33)] == [1, 4, 8, 16, 24, 32, 40]
    assert [bucket_rows(rows, bucket_step("pow2")) for rows in (1, 3, 9, 17, 33)] == [1, 4, 16, 32, 64]
    assert bucket_rows(17, bucket_step("off")) == 17 and bucket_step("1") == 0  # "1": repositories written before steps
    assert [bucket_spelling(value) for value in ("1", "0", "pow2", "8", "off")] == ["pow2", "off", "pow2", "8", "off"]
    path = onnx_from_hf(tiny_bert, tmp_path / "fp32.onnx")
    plain = cpu_session(str(path), threads=1)
    runner = DeviceRunner(cpu_session(str(path), threads=1), max_graphs=8, batch_buckets="8", device="cpu")
    for seed, batch in enumerate([17, 9, 20]):
        inputs = example_inputs(tiny_bert, batch, 8, seed=seed)
        for g, e in zip(runner.run(inputs), plain.run(None, inputs), strict=True):
            assert g.shape == e.shape
            np.testing.assert_allclose(g, e, atol=1e-5)
    assert sorted(key[0][1][0] for key in runner.slots) == [16, 24]


def test_runner_binds_inputs_one_by_one_when_their_shapes_differ(tiny_bert: LoadedModel, tmp_path: Path) -> None:
    path = onnx_from_hf(tiny_bert, tmp_path / "fp32.onnx")
    runner = DeviceRunner(cpu_session(str(path), threads=1), max_graphs=0, device="cpu")
    inputs = example_inputs(tiny_bert, 2, 8, seed=0)
    slot = runner.slot({**inputs, "attention_mask": inputs["attention_mask"][:, :4]}, graph=False)
    assert slot.packed is None and set(slot.inputs) == set(inputs)
