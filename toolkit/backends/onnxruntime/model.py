"""Python-based Triton backend for ``platform: "onnxruntime_onnx"`` models.

Triton runs ``<backend-dir>/onnxruntime/model.py`` for such models when the native ONNX Runtime
backend is absent (the pip-installed server has none). The model file is
``<model dir>/<version>/<default_model_filename or model.onnx>``.

- Tensor names and dtypes come from the model config; the ONNX graph must have the same inputs.
- Execution provider: CUDA (I/O binding) when the instance is KIND_GPU and onnxruntime-gpu sees
  a GPU, else CPU. Config parameters (string values): ``intra_op_thread_count`` (CPU threads, 0 =
  ORT default; the native onnxruntime backend's name; ``intra_op_threads``, our earlier name, is
  still read), ``enable_cuda_graph`` (1 = replay one CUDA graph per input shape, up to
  ``cuda_graph_max_shapes``, default 16; other shapes run without a graph; see ort_device.py),
  ``cuda_graph_batch_buckets`` (``pow2`` or 1: pad batches up to a power of two rows, so graphs cover every
  batch; N >= 2: powers of two up to N rows, then multiples of N; see ``ort_device.bucket_step``).
  Both CUDA graph parameters are ours alone: NVIDIA's native backend ignores them.
- All requests of one ``execute`` whose non-batch shapes agree run as one ORT call; every request
  gets exactly one response, a TritonError when its group failed. Each execute's phases are timed
  (``step_timing.py``: gather, upload, engine, download, respond).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # ort_device.py, step_timing.py, triton_batching.py: copied beside us
from ort_device import DeviceRunner, cpu_session, cuda_session, placement
from step_timing import StepClock, triton_sink
from triton_batching import run_grouped, tensor_specs


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
        where = placement(args.get("model_instance_kind"), args.get("model_instance_device_id"), ort.get_available_providers())
        if where.warning:
            logger.log_warn(f"{args['model_name']}: {where.warning}")
        self.use_cuda, self.device_id = where.cuda, where.device_id
        cuda_graph = self.use_cuda and parameters.get("enable_cuda_graph", "0") == "1"

        threads = int(parameters.get("intra_op_thread_count", parameters.get("intra_op_threads", "0")))
        if self.use_cuda:
            self.session, refused = cuda_session(path, self.device_id, cuda_graph, threads)
            if refused:
                logger.log_warn(f"{args['model_name']}: CUDA graphs refused ({refused}); serving without them")
                cuda_graph = False
        else:
            self.session = cpu_session(path, threads)
        self._check_graph_names(path)
        max_graphs = int(parameters.get("cuda_graph_max_shapes", "16")) if cuda_graph else 0
        buckets = parameters.get("cuda_graph_batch_buckets")
        self.device = DeviceRunner(self.session, self.device_id, max_graphs, buckets) if self.use_cuda else None
        logger.log_info(f"{args['model_name']}: {path} on {self.session.get_providers()[0]}")
        self.clock = StepClock(triton_sink(pb_utils, args["model_name"], args.get("model_instance_name", "")))

    def finalize(self) -> None:
        self.clock.flush()

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

    def _run(self, feeds: dict[str, np.ndarray], wanted: list[str]) -> list[np.ndarray]:
        if self.device is None:
            values = self.session.run(wanted, feeds)
            self.clock.mark("engine")
            return values
        return self.device.run(feeds, wanted, self.clock.mark)  # only what was asked for leaves the GPU

    def execute(self, requests: list[Any]) -> list[Any]:
        return run_grouped(requests, self.inputs, self.outputs, self._run, "onnxruntime", self.clock)
