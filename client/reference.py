"""The FP32 reference for fidelity: the fp32 ONNX graph run by ONNX Runtime on the CPU.

On the CPU there is no TF32, so this reference is true FP32 by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from toolkit.errors import BadInputError
from toolkit.names import Precision
from toolkit.repository.lookup import engine_file
from toolkit.repository.naming import engine_model
from toolkit.runtimes import DEFAULT_RUNTIME, get_runtime

REFERENCE_RUNTIME = DEFAULT_RUNTIME  # ONNX Runtime: the one runtime that runs everywhere, on the CPU too


def reference_onnx_path(repository: Path, name: str) -> Path:
    """The fp32 ONNX Runtime engine file of ``name`` inside a built repository."""
    found = engine_file(repository, name, Precision.FP32.value, REFERENCE_RUNTIME)
    if found is None:
        folder = repository / engine_model(name, Precision.FP32, REFERENCE_RUNTIME)
        raise BadInputError(f"no fp32 ONNX file under {folder}; build the fp32 variant or pass --reference PATH")
    return found


class OnnxReference:
    """The fp32 graph on ONNX Runtime's CPU provider; ``run`` feeds only the inputs the graph declares."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise BadInputError(f"reference ONNX file {path} does not exist; pass --reference with an fp32 .onnx")
        self.path = path
        self._runner = get_runtime(REFERENCE_RUNTIME).load(path, "cpu")
        self.input_names: list[str] = list(self._runner.input_names)
        self.output_names: list[str] = list(self._runner.output_names)

    def run(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Outputs (all by default) of the graph on ``inputs``; extra inputs are ignored, missing ones refused."""
        return self._runner.run(inputs, outputs)
