"""Batch the requests of one ``execute`` call into engine runs; shared by the engine backends.

Copied beside ``onnxruntime/model.py`` and ``tensorrt/model.py`` in the server's backend folder
(those files import it by this module name, so it is not a package import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

NUMPY_OF_TRITON = {
    "TYPE_BOOL": np.bool_,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
}

Spec = tuple[str, Any, list[int]]  # (tensor name, numpy dtype, dims without batch)


def tensor_specs(entries: list[dict[str, Any]]) -> list[Spec]:
    """Config ``input``/``output`` entries -> (name, numpy dtype, dims)."""
    return [(e["name"], NUMPY_OF_TRITON[e["data_type"]], [int(d) for d in e.get("dims", [])]) for e in entries]


def run_grouped(
    requests: list[Any],
    inputs: list[Spec],
    outputs: list[Spec],
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
    engine: str,
) -> list[Any]:
    """One ``run`` per group of requests whose non-batch input shapes agree; one response per request.

    A failing run answers each request of its group with a TritonError naming ``engine``.
    """
    responses: list[Any] = [None] * len(requests)
    groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
    for index, request in enumerate(requests):
        feeds = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy().astype(dtype, copy=False) for name, dtype, _ in inputs}
        groups.setdefault(tuple(array.shape[1:] for array in feeds.values()), []).append((index, feeds))
    for members in groups.values():
        try:
            results = run({name: np.concatenate([feeds[name] for _, feeds in members]) for name, _, _ in inputs})
        except Exception as error:  # fail these requests, keep the model serving
            failure = pb_utils.TritonError(f"{engine} run failed: {type(error).__name__}: {error}")
            for index, _ in members:
                responses[index] = pb_utils.InferenceResponse(error=failure)
            continue
        start = 0
        for index, feeds in members:
            stop = start + next(iter(feeds.values())).shape[0]
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(result[start:stop].astype(dtype, copy=False)))
                for (name, dtype, _), result in zip(outputs, results, strict=True)
            ]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop
    return responses
