"""Triton Python backend: a classifier's ``label_id`` -> ``label``, the name its checkpoint gives the class.

Copied into ``<name>_labels/1/model.py``; the names come from the config parameter ``id2label`` (JSON,
written from the checkpoint's ``id2label`` by the build). Self-contained (numpy, triton_python_backend_utils).
An id without a name (a head whose config lists fewer labels) answers ``LABEL_<id>``, transformers' default.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Looks each row's label id up in ``id2label``; one response per request."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.names = {int(key): value.encode("utf-8") for key, value in json.loads(parameters["id2label"]).items()}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            ids = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
            names = [self.names.get(int(i), f"LABEL_{int(i)}".encode()) for i in ids]
            labels = np.array(names, dtype=np.object_).reshape(-1, 1)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, labels)]))
        return responses
