"""Task accuracy through the real server: a BERT checkpoint with a classification head, on the shipped sentiment set."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.api import TritonTextClient
from client.inputs import load_sentiment
from client.task import predictions, task_accuracy
from toolkit.build import BuildRequest, build_model
from toolkit.errors import BadInputError
from toolkit.models.tokenizers import load_tokenizer_file
from toolkit.names import Precision
from toolkit.repository.naming import tokenizer_model
from toolkit.serving.server import running_server


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MiniLM's real encoder with a seeded 2-label head, saved as a BertForSequenceClassification checkpoint."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from toolkit.models.loading import minilm_folder

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(minilm_folder(), num_labels=2)
    folder = tmp_path_factory.mktemp("minilm_sst2")
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_folder()).save_pretrained(folder)
    return folder


@pytest.mark.server
@pytest.mark.timeout(600)
def test_task_accuracy_reports_agreement_with_fp32_when_model_has_a_head(classifier_folder: Path, tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    request = BuildRequest(
        model=str(classifier_folder),
        name="sst",
        precisions=(Precision.FP32, Precision.HYBRID),
        max_batch=8,
        min_seq=1,
        opt_seq=32,
        max_seq=64,
    )
    served = build_model(request, repository, tmp_path / "work", log=lambda _: None)
    assert served is not None and "logits" in {spec.name for spec in served.engines[0].outputs}
    labelled = load_sentiment("shipped")[:40]
    with running_server(repository, state_dir=tmp_path / "server") as handle:
        client = TritonTextClient(f"localhost:{handle.ports.grpc}")
        records = task_accuracy(
            client, load_tokenizer_file(repository / tokenizer_model("sst") / "1" / "tokenizer"), "sst", labelled, ["fp32", "hybrid"], seq=64
        )
        with pytest.raises(BadInputError, match="classification head"):
            predictions(
                client, tokenizer_model("sst"), load_tokenizer_file(repository / tokenizer_model("sst") / "1" / "tokenizer"), ["text"], 16, 1
            )
    by_precision = {record.precision: record for record in records}
    assert by_precision["fp32"].agreement_with_fp32 == 1.0 and by_precision["fp32"].examples == 40
    assert 0.0 <= by_precision["fp32"].accuracy <= 1.0
    assert by_precision["hybrid"].agreement_with_fp32 >= 0.95 and by_precision["hybrid"].nan_rows == 0
