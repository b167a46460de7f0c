"""Task accuracy through the real server: a BERT checkpoint with a classification head, on the shipped sentiment set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from client.api import TritonTextClient
from client.inputs import encode_batch, load_sentiment
from client.task import predictions, task_accuracy
from toolkit.build import BuildRequest, build_model
from toolkit.errors import BadInputError
from toolkit.models.tokenizers import load_tokenizer_file
from toolkit.names import Precision
from toolkit.repository.naming import engine_model, tokenizer_model
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


def _pytorch_logits(folder: Path, tokenizer: Tokenizer, texts: list[str], seq: int) -> np.ndarray:
    """The checkpoint's own class logits in PyTorch, on the tokens the served path makes (``encode_batch``)."""
    import torch
    from transformers import BertForSequenceClassification

    tokens = encode_batch(tokenizer, texts, seq)
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(tokens.input_ids),
            attention_mask=torch.from_numpy(tokens.attention_mask),
            token_type_ids=torch.from_numpy(tokens.token_type_ids),
        )
    return np.asarray(out.logits.numpy())


@pytest.mark.server
@pytest.mark.timeout(600)
def test_task_accuracy_equals_pytorch_and_hybrid_agrees_with_fp32_when_model_has_a_head(classifier_folder: Path, tmp_path: Path) -> None:
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
    texts, labels = [text for _, text in labelled], np.array([label for label, _ in labelled])
    tokenizer = load_tokenizer_file(repository / tokenizer_model("sst") / "1" / "tokenizer")
    with running_server(repository, state_dir=tmp_path / "server") as handle:
        client = TritonTextClient(f"localhost:{handle.ports.grpc}")
        records = task_accuracy(client, tokenizer, "sst", labelled, ["fp32", "hybrid"], seq=64)
        logits = {p: predictions(client, engine_model("sst", p), tokenizer, texts, 64, 8) for p in ("fp32", "hybrid")}
        with pytest.raises(BadInputError, match="classification head"):
            predictions(client, tokenizer_model("sst"), tokenizer, ["text"], 16, 1)
    by_precision = {record.precision: record for record in records}
    expected = _pytorch_logits(classifier_folder, tokenizer, texts, 64)
    # Served FP32 is the checkpoint itself: same logits as PyTorch (export checks allow 1e-3 abs), same accuracy.
    np.testing.assert_allclose(logits["fp32"], expected, atol=1e-3)
    assert by_precision["fp32"].accuracy == pytest.approx(float((expected.argmax(-1) == labels).mean()))
    assert by_precision["fp32"].examples == 40 and by_precision["fp32"].agreement_with_fp32 == 1.0
    # Measured: hybrid's largest logit error 5.0e-5, FP32's smallest margin between the two classes 3.9e-4, so no
    # prediction flips (agreement 1.0). The floor allows ten times that error; a flip needs about four times.
    margin = float(np.abs(np.diff(logits["fp32"], axis=-1)).min())
    error = float(np.abs(logits["hybrid"] - logits["fp32"]).max())
    print(f"smallest FP32 logit margin {margin:.3g}, largest hybrid logit error {error:.3g}, accuracy {by_precision['fp32'].accuracy}")
    assert error <= 10 * 5.0e-5
    assert by_precision["hybrid"].agreement_with_fp32 == 1.0 and by_precision["hybrid"].nan_rows == 0
