"""The client's validation and error wording, without a server."""

from __future__ import annotations

import numpy as np
import pytest

from client.api import TritonTextClient, _is_unavailable, ids_inputs
from toolkit.errors import BadInputError, ServerError


def test_client_rejects_unknown_protocol_when_built() -> None:
    with pytest.raises(BadInputError, match="--protocol"):
        TritonTextClient(protocol="udp")  # type: ignore[arg-type]


def test_is_ready_false_and_require_ready_names_url_when_server_down(dead_port: int) -> None:
    client = TritonTextClient(f"127.0.0.1:{dead_port}", retries=1, backoff_s=0.01)
    assert client.is_ready() is False
    with pytest.raises(ServerError, match=r"127\.0\.0\.1:\d+ \(grpc\) does not answer.*make serve"):
        client.require_ready()


def test_infer_ids_raises_server_error_when_server_down(dead_port: int) -> None:
    client = TritonTextClient(f"127.0.0.1:{dead_port}", protocol="http", retries=0)
    ids = np.ones((1, 4), dtype=np.int64)
    with pytest.raises(ServerError, match="make serve"):
        client.infer_ids("minilm_fp32_onnx", ids, ids, outputs=["last_hidden_state"])


def test_ids_inputs_cast_to_int64_when_given_int32() -> None:
    ids = np.ones((2, 3), dtype=np.int32)
    tensors = ids_inputs(ids, ids, ids)
    assert list(tensors) == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(t.dtype == np.int64 for t in tensors.values())


def test_ids_inputs_rejects_when_shapes_differ() -> None:
    with pytest.raises(BadInputError, match="attention_mask"):
        ids_inputs(np.ones((2, 3)), np.ones((2, 4)))


def test_is_unavailable_only_for_unavailable_status_when_classifying() -> None:
    from tritonclient.utils import InferenceServerException

    assert _is_unavailable(InferenceServerException("x", status="StatusCode.UNAVAILABLE"))
    assert _is_unavailable(ConnectionRefusedError())
    assert not _is_unavailable(InferenceServerException("x", status="StatusCode.NOT_FOUND"))
    assert not _is_unavailable(ValueError("x"))
