"""Python-based Triton backend for ``platform: "onnxruntime_onnx"`` models.

Triton runs ``<backend-dir>/onnxruntime/model.py`` for such models when the native ONNX Runtime
backend is absent (the pip-installed server has none). The model file is
``<model dir>/<version>/<default_model_filename or model.onnx>``.

- Tensor names and dtypes come from the model config; the ONNX graph must have the same inputs.
- Execution provider: CUDA (I/O binding) when the instance is KIND_GPU and onnxruntime-gpu sees
  a GPU, else CPU. Config parameters (string values): ``intra_op_threads`` (CPU threads, 0 =
  ORT default), ``enable_cuda_graph`` (1 = replay one CUDA graph per input shape, up to
  ``cuda_graph_max_shapes``, default 16; other shapes run without a graph).
- All requests of one ``execute`` whose non-batch shapes agree run as one ORT call; every request
  gets exactly one response, a TritonError when its group failed.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # triton_batching.py is copied beside us
from triton_batching import run_grouped, tensor_specs


class _CudaGraphs:
    """One captured graph per input shape: ORT replays a graph only on the same device buffers."""

    def __init__(self, session: ort.InferenceSession, device_id: int, outputs: list[Any], max_shapes: int) -> None:
        self.session, self.device_id, self.outputs, self.max_shapes = session, device_id, outputs, max_shapes
        self.slots: dict[tuple[Any, ...], tuple[int, dict[str, ort.OrtValue], list[ort.OrtValue], Any]] = {}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray] | None:
        """Run through a graph for this shape, or return None when the shape cache is full."""
        key = tuple((name, array.shape) for name, array in feeds.items())
        slot = self.slots.get(key)
        if slot is None:
            if len(self.slots) >= self.max_shapes:
                return None
            slot = self._new_slot(key, feeds)
        graph_id, inputs, outputs, binding = slot
        for name, array in feeds.items():
            inputs[name].update_inplace(np.ascontiguousarray(array))
        options = ort.RunOptions()
        options.add_run_config_entry("gpu_graph_id", str(graph_id))
        self.session.run_with_iobinding(binding, options)
        return [value.numpy() for value in outputs]

    def _new_slot(self, key: tuple[Any, ...], feeds: dict[str, np.ndarray]) -> Any:
        # Output buffers must exist before capture; a -1 output dim is the input's sequence length
        # (true for encoder states and decoder logits, the engines this toolkit serves).
        batch, seq = next(iter(feeds.values())).shape[:2]
        binding = self.session.io_binding()
        inputs = {n: ort.OrtValue.ortvalue_from_numpy(a, "cuda", self.device_id) for n, a in feeds.items()}
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        outputs = []
        for name, dtype, dims in self.outputs:
            shape = [batch, *(seq if d == -1 else d for d in dims)]
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", self.device_id)
            binding.bind_ortvalue_output(name, value)
            outputs.append(value)
        slot = (len(self.slots) + 1, inputs, outputs, binding)  # graph id 0 is ORT's default graph
        self.slots[key] = slot
        return slot


class TritonPythonModel:
    """Serves one ONNX graph with ONNX Runtime."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.inputs = tensor_specs(config["input"])
        self.outputs = tensor_specs(config["output"])
        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        logger = pb_utils.Logger
        wants_gpu = args.get("model_instance_kind") == "GPU"
        self.use_cuda = wants_gpu and "CUDAExecutionProvider" in ort.get_available_providers()
        if wants_gpu and not self.use_cuda:
            logger.log_warn(f"{args['model_name']}: KIND_GPU but onnxruntime has no CUDA provider; using CPU")
        self.device_id = int(args.get("model_instance_device_id") or 0)
        cuda_graph = self.use_cuda and parameters.get("enable_cuda_graph", "0") == "1"

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_threads", "0"))
        if self.use_cuda:
            cuda_options = {"device_id": str(self.device_id), "enable_cuda_graph": "1" if cuda_graph else "0"}
            providers: list[Any] = [("CUDAExecutionProvider", cuda_options), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(path, options, providers=providers)
        self._check_graph_names(path)
        max_shapes = int(parameters.get("cuda_graph_max_shapes", "16"))
        self.graphs = _CudaGraphs(self.session, self.device_id, self.outputs, max_shapes) if cuda_graph else None
        logger.log_info(f"{args['model_name']}: {path} on {self.session.get_providers()[0]}")

    def _check_graph_names(self, path: str) -> None:
        graph_inputs = {i.name for i in self.session.get_inputs()}
        graph_outputs = {o.name for o in self.session.get_outputs()}
        config_inputs = {name for name, _, _ in self.inputs}
        missing_outputs = {name for name, _, _ in self.outputs} - graph_outputs
        if graph_inputs != config_inputs or missing_outputs:
            raise ValueError(
                f"{path}: graph inputs {sorted(graph_inputs)} / outputs {sorted(graph_outputs)} do not match "
                f"the config's inputs {sorted(config_inputs)} and outputs; regenerate the repository"
            )

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = [name for name, _, _ in self.outputs]
        if not self.use_cuda:
            return self.session.run(names, feeds)
        if self.graphs is not None:
            results = self.graphs.run(feeds)
            if results is not None:
                return results
        binding = self.session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in names:
            binding.bind_output(name, "cuda", self.device_id)
        options = ort.RunOptions()
        if self.graphs is not None:
            options.add_run_config_entry("gpu_graph_id", "-1")  # shape cache full: run without a graph
        self.session.run_with_iobinding(binding, options)
        return binding.copy_outputs_to_cpu()

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_grouped(requests, self.inputs, self.outputs, self._run, "onnxruntime")
