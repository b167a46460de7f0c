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


def _requested(request: Any, types: dict[str, Any]) -> list[str]:
    """Output names a request asks for, in config order; all of them when it names none."""
    names = set(request.requested_output_names())
    return [name for name in types if name in names] or list(types)


def run_grouped(
    requests: list[Any],
    inputs: list[Spec],
    outputs: list[Spec],
    run: Callable[[dict[str, np.ndarray], list[str]], list[np.ndarray]],
    engine: str,
    clock: Any = None,
) -> list[Any]:
    """One ``run`` per group of requests whose non-batch input shapes agree; one response per request.

    ``run(feeds, names)`` returns the outputs ``names`` (the union of what the group's requests ask for;
    a request that names none, as perf_analyzer's, asks for all) in that order. Each response carries what
    its request asked for: an ensemble step asks only for the tensors it maps on. A failing run answers
    each request of its group with a TritonError naming ``engine``. ``clock`` (a ``step_timing.StepClock``), when
    given, times the phases: ``gather`` (inputs into one batch), ``run``'s own marks, ``respond``.
    """
    if clock is not None:
        clock.start()
    responses: list[Any] = [None] * len(requests)
    groups: dict[tuple[Any, ...], list[tuple[int, dict[str, np.ndarray]]]] = {}
    for index, request in enumerate(requests):
        feeds = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy().astype(dtype, copy=False) for name, dtype, _ in inputs}
        groups.setdefault(tuple(array.shape[1:] for array in feeds.values()), []).append((index, feeds))
    types = {name: dtype for name, dtype, _ in outputs}
    rows = 0
    for members in groups.values():
        asked = [_requested(requests[index], types) for index, _ in members]
        wanted = [name for name in types if any(name in names for names in asked)]
        try:
            batch = members[0][1] if len(members) == 1 else {n: np.concatenate([f[n] for _, f in members]) for n, _, _ in inputs}
            if clock is not None:
                clock.mark("gather")
            results = dict(zip(wanted, run(batch, wanted), strict=True))
        except Exception as error:  # fail these requests, keep the model serving
            failure = pb_utils.TritonError(f"{engine} run failed: {type(error).__name__}: {error}")
            for index, _ in members:
                responses[index] = pb_utils.InferenceResponse(error=failure)
            continue
        start = 0
        for (index, feeds), names in zip(members, asked, strict=True):
            stop = start + next(iter(feeds.values())).shape[0]
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(results[name][start:stop].astype(types[name], copy=False))) for name in names]
            responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop
        rows += start
        if clock is not None:
            clock.mark("respond")
    if clock is not None:
        clock.done(rows)
    return responses
