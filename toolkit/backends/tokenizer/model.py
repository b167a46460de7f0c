"""Triton Python backend: TEXT -> token tensors, with a per-row ``truncated`` flag.

Copied into ``<name>_tokenizer/1/model.py`` with ``text_encoder.py`` and ``step_timing.py`` beside it; the tokenizer files sit in
``tokenizer/``. Self-contained (numpy, tokenizers, triton_python_backend_utils): it runs inside Triton's Python
stub, where the toolkit itself may not be installed. The rules (validation, truncation, padding, buckets, the
plain-ASCII fast path) are ``text_encoder.TextEncoder``'s. The texts of every request of one ``execute`` are
encoded in one call, and each request is padded on its own (one response each; a bad request fails alone).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import triton_python_backend_utils as pb_utils

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # text_encoder.py and step_timing.py are copied beside us
from step_timing import StepClock, triton_sink
from text_encoder import ModelSetup, texts_per_request


class TritonPythonModel:
    """Tokenizes every request of an ``execute`` in one ``encode_batch_fast`` call."""

    def initialize(self, args: dict[str, Any]) -> None:
        setup = ModelSetup.from_args(args)
        config, self.encoder = setup.config, setup.encoder
        self.output_names = [output["name"] for output in config["output"]]
        self.input_name = config["input"][0]["name"]
        self.clock = StepClock(triton_sink(pb_utils, args["model_name"], args.get("model_instance_name", "")))

    def finalize(self) -> None:
        self.clock.flush()

    def execute(self, requests: list[Any]) -> list[Any]:
        clock = self.clock
        clock.start()
        accepted, refused = texts_per_request([pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests])
        responses: list[Any] = [pb_utils.InferenceResponse(error=pb_utils.TritonError(refused[i])) if i in refused else None for i in range(len(requests))]
        clock.mark("decode")
        try:
            encoded = self.encoder.requests([texts for _, texts in accepted])
            clock.mark("tokenize")
        except Exception as error:  # one bad batch must not take the model down
            failure = pb_utils.TritonError(f"tokenizer failed: {type(error).__name__}: {error}")
            return [response or pb_utils.InferenceResponse(error=failure) for response in responses]
        for (index, _), encodings in zip(accepted, encoded, strict=True):
            tensors = self.encoder.tensors(encodings)
            outputs = [pb_utils.Tensor(name, tensors[name]) for name in self.output_names]
            responses[index] = pb_utils.InferenceResponse(output_tensors=outputs)
        clock.mark("respond")  # packing each request's tensors and making its response
        clock.done(sum(len(encodings) for encodings in encoded))
        return responses
