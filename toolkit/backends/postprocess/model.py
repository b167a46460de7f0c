"""Triton Python backend after the engine: BERT mean pooling or GPT-2 next-token choice.

BERT (``family`` = bert): ``sentence_embedding`` = mean of ``last_hidden_state`` over positions
whose attention mask is 1, as sentence-transformers pools (no normalisation).
GPT-2 (``family`` = gpt2): ``next_token_logits`` = ``logits`` at the last position whose mask is 1,
``next_token_id`` = its argmax. Self-contained (numpy + triton_python_backend_utils).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def mean_pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[b, s, h] states and [b, s] mask -> [b, h] mean over unmasked positions."""
    weights = mask.astype(np.float32)[:, :, None]
    return (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def last_token_logits(logits: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[b, s, v] logits and [b, s] mask -> [b, v] logits at each row's last unmasked position."""
    positions = np.where(mask.any(axis=1), mask.shape[1] - 1 - np.argmax(mask[:, ::-1] != 0, axis=1), 0)
    return logits[np.arange(logits.shape[0]), positions]


class TritonPythonModel:
    """Stateless numpy postprocessing, one response per request."""

    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        self.family = config["parameters"]["family"]["string_value"]
        if self.family not in ("bert", "gpt2"):
            raise ValueError(f"postprocess parameter family={self.family!r}: expected 'bert' or 'gpt2'")

    def _outputs(self, request: Any) -> list[Any]:
        mask = pb_utils.get_input_tensor_by_name(request, "attention_mask").as_numpy()
        if self.family == "bert":
            states = pb_utils.get_input_tensor_by_name(request, "last_hidden_state").as_numpy()
            return [pb_utils.Tensor("sentence_embedding", mean_pool(states, mask).astype(np.float32))]
        logits = pb_utils.get_input_tensor_by_name(request, "logits").as_numpy()
        chosen = last_token_logits(logits, mask).astype(np.float32)
        ids = np.argmax(chosen, axis=1).astype(np.int64)[:, None]
        return [pb_utils.Tensor("next_token_logits", chosen), pb_utils.Tensor("next_token_id", ids)]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._outputs(request)))
            except Exception as error:  # answer the request, keep serving the others
                message = f"postprocess failed: {type(error).__name__}: {error}"
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(message)))
        return responses
