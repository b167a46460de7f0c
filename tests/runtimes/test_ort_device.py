"""The ONNX Runtime backend's device handling, on the CPU: each Triton instance on the GPU it is given."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from toolkit.runtimes import ort_device
from toolkit.runtimes.ort_device import DeviceRunner, placement

CUDA = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("kind", "device", "providers", "expected"),
    [
        ("GPU", "1", CUDA, (True, 1, None)),
        ("GPU", 0, CUDA, (True, 0, None)),
        ("GPU", "1", ["CPUExecutionProvider"], (False, 1, "KIND_GPU but onnxruntime has no CUDA provider; using CPU")),
        ("CPU", "0", CUDA, (False, 0, None)),
        (None, None, CUDA, (False, 0, None)),
    ],
)
def test_placement_puts_a_gpu_instance_on_its_own_device_when_cuda_exists(
    kind: str | None, device: str | int | None, providers: list[str], expected: tuple[bool, int, str | None]
) -> None:
    where = placement(kind, device, providers)
    assert (where.cuda, where.device_id, where.warning) == expected


class _Binding:
    def __init__(self) -> None:
        self.bound: list[tuple[str, str, Any]] = []

    def bind_ortvalue_input(self, name: str, value: Any) -> None:
        self.bound.append(("in", name, value))

    def bind_input(self, name: str, device: str, device_id: int, element_type: Any, shape: list[int], pointer: int) -> None:
        self.bound.append(("in", name, (device, device_id, pointer)))

    def bind_ortvalue_output(self, name: str, value: Any) -> None:
        self.bound.append(("out", name, value))


class _Session:
    """What DeviceRunner reads of a session: its outputs and an I/O binding."""

    def get_outputs(self) -> list[Any]:
        output = type("Output", (), {"name": "sentence_embedding", "type": "tensor(float)", "shape": ["batch", 8]})
        return [output]

    def io_binding(self) -> _Binding:
        return _Binding()


def test_device_runner_allocates_every_buffer_on_the_device_it_was_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs packed into one buffer (each bound to its slice there) or one buffer each, and the output: all on GPU 1."""
    placed: list[tuple[str, int]] = []

    class Value:
        def __init__(self, device: str, device_id: int) -> None:
            placed.append((device, device_id))

        def data_ptr(self) -> int:
            return 4096

    monkeypatch.setattr(ort_device.ort.OrtValue, "ortvalue_from_numpy", staticmethod(lambda array, device, device_id: Value(device, device_id)))
    monkeypatch.setattr(ort_device.ort.OrtValue, "ortvalue_from_shape_and_type", staticmethod(lambda shape, dtype, device, device_id: Value(device, device_id)))
    feeds = {"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.ones((2, 4), np.int64)}
    runner = DeviceRunner(_Session(), device_id=1, max_graphs=2)  # type: ignore[arg-type]
    slot = runner.slot(feeds, graph=True)
    assert placed == [("cuda", 1)] * 2 and slot.graph_id == 1 and slot.packed is not None  # one packed input buffer, one output
    assert [entry[2] for entry in slot.binding.bound if entry[0] == "in"] == [("cuda", 1, 4096), ("cuda", 1, 4096 + 2 * 4 * 8)]
    placed.clear()
    DeviceRunner(_Session(), device_id=1, max_graphs=2, pack_inputs=False).slot(feeds, graph=True)  # type: ignore[arg-type]
    assert placed == [("cuda", 1)] * 3
    assert runner.output_shapes(2, 4) == [[2, 8]]
