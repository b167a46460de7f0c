"""Triton Python backend: TEXT -> what the text ensemble returns, tokenizer and ONNX Runtime engine in one model.

The ensemble (tokenizer model -> engine model [-> labels model]) costs one Python-backend hop per step; this
model does the same work in one: ``<name>_<precision>_onehop``, written beside the ensemble when the build is
asked for it (``--one-hop``), never instead of it. Copied into its model's version folder with
``text_encoder.py``, ``ort_device.py`` and ``step_timing.py``; ``model.onnx`` (the engine model's file) and ``tokenizer/`` sit there too.

Per ``execute``: every request's texts are encoded in one call (``text_encoder.TextEncoder``), padded to one
width (the longest row, up to a bucket), run as one engine batch (on CUDA through ``ort_device.DeviceRunner``:
I/O binding and one CUDA graph per shape), and cut back into one response per request carrying what it asked
for. A classifier's ``label`` is looked up from the ``id2label`` parameter. A request with bad text fails alone.
Each execute's phases (decode, tokenize, pack, upload, engine, download, respond) are timed (``step_timing``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # text_encoder.py, ort_device.py, step_timing.py: copied beside us
from ort_device import NUMPY_OF_ORT, DeviceRunner, cpu_session, cuda_session, placement
from step_timing import StepClock, triton_sink
from text_encoder import ModelSetup, texts_per_request

TRUNCATED, LABEL, LABEL_ID = "truncated", "label", "label_id"


class TritonPythonModel:
    """Tokenizes and runs the engine for every request of an ``execute`` at once."""

    def initialize(self, args: dict[str, Any]) -> None:
        setup = ModelSetup.from_args(args)
        config, parameters, version_dir, self.encoder = setup.config, setup.parameters, setup.version_dir, setup.encoder
        self.input_name = config["input"][0]["name"]
        self.outputs = {output["name"]: output["data_type"] for output in config["output"]}
        self.labels = {int(k): v.encode() for k, v in json.loads(parameters.get("id2label", "{}")).items()}
        self._load_engine(os.path.join(version_dir, "model.onnx"), parameters, args)
        self.clock = StepClock(triton_sink(pb_utils, args["model_name"], args.get("model_instance_name", "")))

    def finalize(self) -> None:
        self.clock.flush()

    def _load_engine(self, path: str, parameters: dict[str, str], args: dict[str, Any]) -> None:
        threads = int(parameters.get("intra_op_thread_count", "0"))
        where = placement(args.get("model_instance_kind"), args.get("model_instance_device_id"), ort.get_available_providers())
        if where.warning:
            pb_utils.Logger.log_warn(f"{args['model_name']}: {where.warning}")
        self.device = None
        if where.cuda:
            graphs = parameters.get("enable_cuda_graph", "0") == "1"
            self.session, refused = cuda_session(path, where.device_id, graphs, threads)
            max_graphs = int(parameters.get("cuda_graph_max_shapes", "16")) if graphs and not refused else 0
            self.device = DeviceRunner(self.session, where.device_id, max_graphs, parameters.get("cuda_graph_batch_buckets"))
        else:
            self.session = cpu_session(path, threads)
        self.engine_inputs = {i.name: NUMPY_OF_ORT[i.type] for i in self.session.get_inputs()}
        produced = {o.name for o in self.session.get_outputs()}
        self.engine_outputs = [name for name in self.outputs if name in produced]
        if LABEL in self.outputs and LABEL_ID not in self.engine_outputs:
            self.engine_outputs.append(LABEL_ID)

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        own = {name: feeds[name].astype(dtype, copy=False) for name, dtype in self.engine_inputs.items()}
        if self.device is None:
            values = self.session.run(self.engine_outputs, own)
            self.clock.mark("engine")
        else:
            values = self.device.run(own, self.engine_outputs, self.clock.mark)
        return dict(zip(self.engine_outputs, values, strict=True))

    def _response(self, request: Any, results: dict[str, np.ndarray], rows: slice) -> Any:
        asked = set(request.requested_output_names()) or set(self.outputs)
        tensors = []
        for name in (n for n in self.outputs if n in asked):
            if name == LABEL:
                ids = results[LABEL_ID][rows].reshape(-1)
                value = np.array([self.labels.get(int(i), f"LABEL_{int(i)}".encode()) for i in ids], dtype=np.object_).reshape(-1, 1)
            else:
                value = np.ascontiguousarray(results[name][rows])
            tensors.append(pb_utils.Tensor(name, value))
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def execute(self, requests: list[Any]) -> list[Any]:
        clock = self.clock
        clock.start()
        accepted, refused = texts_per_request([pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests])
        responses: list[Any] = [pb_utils.InferenceResponse(error=pb_utils.TritonError(refused[i])) if i in refused else None for i in range(len(requests))]
        if not accepted:
            return responses
        clock.mark("decode")
        rows = 0
        try:
            encodings = self.encoder.encodings([text for _, texts in accepted for text in texts])
            clock.mark("tokenize")
            tensors = self.encoder.tensors(encodings)  # every row of every request padded to one width: one engine run
            clock.mark("pack")
            results = {**self._run(tensors), TRUNCATED: tensors[TRUNCATED]}
        except Exception as error:  # fail these requests, keep the model serving
            failure = pb_utils.TritonError(f"one-hop model failed: {type(error).__name__}: {error}")
            return [response or pb_utils.InferenceResponse(error=failure) for response in responses]
        for index, texts in accepted:
            responses[index] = self._response(requests[index], results, slice(rows, rows + len(texts)))
            rows += len(texts)
        clock.mark("respond")
        clock.done(rows)
        return responses
