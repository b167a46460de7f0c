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
    placed: list[tuple[str, int]] = []

    def from_numpy(array: np.ndarray, device: str, device_id: int) -> tuple[str, int]:
        placed.append((device, device_id))
        return (device, device_id)

    def from_shape(shape: list[int], dtype: Any, device: str, device_id: int) -> tuple[str, int]:
        placed.append((device, device_id))
        return (device, device_id)

    monkeypatch.setattr(ort_device.ort.OrtValue, "ortvalue_from_numpy", staticmethod(from_numpy))
    monkeypatch.setattr(ort_device.ort.OrtValue, "ortvalue_from_shape_and_type", staticmethod(from_shape))
    runner = DeviceRunner(_Session(), device_id=1, max_graphs=2)  # type: ignore[arg-type]
    slot = runner.slot({"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.ones((2, 4), np.int64)}, graph=True)
    assert placed == [("cuda", 1)] * 3 and slot.graph_id == 1
    assert runner.output_shapes(2, 4) == [[2, 8]]
