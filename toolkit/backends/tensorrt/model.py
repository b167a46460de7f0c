"""Python-based Triton backend for ``platform: "tensorrt_plan"`` models (TensorRT 10 Python API).

Triton runs ``<backend-dir>/tensorrt/model.py`` for such models when the native TensorRT backend
is absent. It deserializes ``<model dir>/<version>/model.plan`` and runs it on torch CUDA tensors
(set_input_shape, set_tensor_address, execute_async_v3). ``tensorrt`` and ``torch`` are imported in
``initialize`` so a missing package fails that model's load with the package's name, not the server.
Requests of one ``execute`` whose non-batch shapes agree run as one engine call; one response each.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # triton_batching.py is copied beside us
from triton_batching import run_grouped, tensor_specs


class TritonPythonModel:
    """Serves one serialized TensorRT engine on the instance's GPU."""

    def initialize(self, args: dict[str, Any]) -> None:
        try:
            import tensorrt as trt
            import torch
        except ImportError as error:
            raise ImportError(
                f"the tensorrt_plan backend needs the '{error.name}' package in the server's Python "
                "(pip install tensorrt-cu12 torch, or serve from NVIDIA's tritonserver container)"
            ) from error
        self.trt, self.torch = trt, torch
        config = json.loads(args["model_config"])
        self.inputs = tensor_specs(config["input"])
        self.outputs = tensor_specs(config["output"])
        filename = config.get("default_model_filename") or "model.plan"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        self.device = torch.device("cuda", int(args.get("model_instance_device_id") or 0))
        torch.cuda.set_device(self.device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as handle:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(handle.read())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT could not deserialize the plan (built by another TensorRT version?)")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)

    def _torch_dtype(self, name: str) -> Any:
        numpy_type = self.trt.nptype(self.engine.get_tensor_dtype(name))
        return self.torch.from_numpy(np.zeros(0, dtype=numpy_type)).dtype

    def _run(self, feeds: dict[str, np.ndarray], wanted: list[str]) -> list[np.ndarray]:
        torch = self.torch
        keep = []  # device tensors must outlive the asynchronous execution
        for name, array in feeds.items():
            tensor = torch.from_numpy(array).to(self.device, self._torch_dtype(name)).contiguous()
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
            keep.append(tensor)
        outputs = []
        for name, _, _ in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=self._torch_dtype(name), device=self.device)
            self.context.set_tensor_address(name, tensor.data_ptr())
            outputs.append(tensor)
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 returned False (see the server log)")
        self.stream.synchronize()
        by_name = dict(zip((name for name, _, _ in self.outputs), outputs, strict=True))
        return [by_name[name].cpu().numpy() for name in wanted]  # only what was asked for leaves the GPU

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_grouped(requests, self.inputs, self.outputs, self._run, "tensorrt")
