"""The outlier-channel model through the real server: fp16 overflows, hybrid stays finite."""

from __future__ import annotations

from pathlib import Path

import fidelity_floors as floors
import numpy as np
import pytest

from client.api import TritonTextClient
from toolkit.names import DEFAULT_PRECISIONS, Precision
from toolkit.repository.naming import ensemble_model
from toolkit.serving.server import running_server

SENTENCES = ["The match was postponed because of heavy rain.", "Stir the sauce until it thickens, then serve it warm."]


@pytest.mark.server
@pytest.mark.timeout(600)
def test_served_fp16_overflows_and_hybrid_does_not_when_residual_channel_is_large(outlier_repository: Path, tmp_path: Path) -> None:
    with running_server(outlier_repository, state_dir=tmp_path / "server") as handle:
        client = TritonTextClient(f"localhost:{handle.ports.grpc}")
        embeddings = {p: client.infer_text(ensemble_model("outlier", p), SENTENCES)["sentence_embedding"] for p in DEFAULT_PRECISIONS}
    assert np.isfinite(embeddings[Precision.FP32]).all()
    assert not np.isfinite(embeddings[Precision.FP16]).all()
    assert np.isfinite(embeddings[Precision.HYBRID]).all()
    reference, hybrid = embeddings[Precision.FP32], embeddings[Precision.HYBRID]
    cosine = (reference * hybrid).sum(-1) / np.linalg.norm(reference, axis=-1) / np.linalg.norm(hybrid, axis=-1)
    print(f"outlier MiniLM served, hybrid sentence_embedding cosine against FP32: {cosine}")
    assert cosine.min() >= floors.SERVED_OUTLIER_HYBRID
