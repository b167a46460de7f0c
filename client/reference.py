"""The FP32 reference for fidelity: the fp32 ONNX graph run by ONNX Runtime on the CPU.

On the CPU there is no TF32, so this reference is true FP32 by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.engines.onnxrt import session_for
from toolkit.errors import BadInputError
from toolkit.names import Precision, Runtime, engine_model
from toolkit.repository.lookup import engine_file


def reference_onnx_path(repository: Path, name: str) -> Path:
    """The fp32 ONNX Runtime engine file of ``name`` inside a built repository."""
    found = engine_file(repository, name, Precision.FP32.value, Runtime.ONNXRUNTIME.value)
    if found is None:
        folder = repository / engine_model(name, Precision.FP32, Runtime.ONNXRUNTIME)
        raise BadInputError(f"no fp32 ONNX file under {folder}; build the fp32 variant or pass --reference PATH")
    return found


class OnnxReference:
    """ONNX Runtime CPU session on an fp32 graph; ``run`` feeds only the inputs the graph declares."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        if not path.is_file():
            raise BadInputError(f"reference ONNX file {path} does not exist; pass --reference with an fp32 .onnx")
        self.path = path
        self._session: Any = session_for(path, "cpu", threads=threads)
        self.input_names: list[str] = [i.name for i in self._session.get_inputs()]
        self.output_names: list[str] = [o.name for o in self._session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs (all by default) of the graph on ``inputs``; extra inputs are ignored, missing ones refused."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise BadInputError(f"reference {self.path.name} needs inputs {missing}; got {sorted(inputs)}")
        names = list(outputs) if outputs is not None else self.output_names
        values = self._session.run(names, {name: inputs[name] for name in self.input_names})
        return dict(zip(names, values, strict=True))
