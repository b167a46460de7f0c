"""Task accuracy: a labelled set through each precision's classification head, against labels and FP32.

Needs a checkpoint with a sequence-classification head (its engines output ``logits``), e.g. an SST-2
fine-tuned BERT on users' machines. Offline, the shipped sentiment set stands in for SST-2; with a head that
was not trained on it, accuracy means little but agreement with FP32 still measures what precision costs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from client.api import TritonTextClient
from client.inputs import encode_batch
from toolkit.errors import BadInputError
from toolkit.names import DEFAULT_PRECISIONS, LOGITS
from toolkit.repository.naming import engine_model
from toolkit.runtimes import DEFAULT_RUNTIME

if TYPE_CHECKING:
    from tokenizers import Tokenizer


ALL_PRECISIONS = tuple(precision.value for precision in DEFAULT_PRECISIONS)


@dataclass(frozen=True)
class TaskRecord:
    """Accuracy of one precision on a labelled set, and how often it agrees with FP32's predictions."""

    model: str
    precision: str
    runtime: str
    examples: int
    accuracy: float
    agreement_with_fp32: float
    nan_rows: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def predictions(client: TritonTextClient, model: str, tokenizer: Tokenizer, texts: Sequence[str], seq: int, batch: int) -> np.ndarray:
    """Per-text class logits from ``model`` (an engine with a ``logits`` output), in input order."""
    if LOGITS not in client.output_names(model):
        raise BadInputError(f"model '{model}' has no '{LOGITS}' output: task accuracy needs a checkpoint with a classification head")
    parts = []
    for start in range(0, len(texts), batch):
        tokens = encode_batch(tokenizer, texts[start : start + batch], seq)
        parts.append(client.infer_ids(model, tokens.input_ids, tokens.attention_mask, tokens.token_type_ids, outputs=[LOGITS])[LOGITS])
    return np.concatenate(parts)


def task_accuracy(
    client: TritonTextClient,
    tokenizer: Tokenizer,
    name: str,
    labelled: Sequence[tuple[int, str]],
    precisions: Sequence[str] = ALL_PRECISIONS,
    runtime: str = DEFAULT_RUNTIME,
    seq: int = 128,
    batch: int = 8,
) -> list[TaskRecord]:
    """Accuracy per precision on ``labelled`` (label, text) pairs and agreement with the fp32 engine."""
    if not labelled:
        raise BadInputError("the labelled set is empty; restore data/sentiment.tsv")
    labels = np.array([label for label, _ in labelled])
    texts = [text for _, text in labelled]
    logits = {
        p: predictions(client, engine_model(name, p, runtime), tokenizer, texts, seq, batch) for p in dict.fromkeys(["fp32", *precisions])
    }
    reference = logits["fp32"].argmax(-1)
    records = []
    for precision in precisions:
        values = logits[precision]
        chosen = values.argmax(-1)
        records.append(
            TaskRecord(
                model=name,
                precision=precision,
                runtime=runtime,
                examples=len(labels),
                accuracy=float((chosen == labels).mean()),
                agreement_with_fp32=float((chosen == reference).mean()),
                nan_rows=int((~np.isfinite(values)).any(-1).sum()),
            )
        )
    return records
