"""A tiny Triton repository for perf tests, written by the project's own repository generator.

The tiny random-weight BERT of ``tests/tiny_models.py`` (FP32 ONNX only: the engine-timing test
expects fp16 to be missing) goes through ``toolkit.repository.install``, as a build's models do: it
writes ``tiny_tokenizer`` (with the manifest), ``tiny_fp32_onnx`` and the ensemble ``tiny_fp32``.
The engine's position table holds ``MAX_SEQ`` positions, while the tokenizer admits up to
``TOKENIZER_MAX_SEQ`` tokens: a sequence in between passes the tokenizer and fails in the engine,
for the engine and the ensemble alike, and the sweep must record that and go on.
"""

from __future__ import annotations

from pathlib import Path

from tiny_models import BERT_POSITIONS, MINILM_TOKENIZER, served_tiny_bert

from toolkit.repository.configs import ServingOptions
from toolkit.repository.install import install_into_repository

NAME = "tiny"
MAX_SEQ = BERT_POSITIONS
TOKENIZER_MAX_SEQ = 4 * MAX_SEQ
MAX_BATCH = 8
MINILM_TOKENIZER_JSON = MINILM_TOKENIZER / "tokenizer.json"


def build_tiny_repository(work: Path) -> Path:
    """Export the tiny BERT under ``work`` and write its repository to ``work/repository``; return that folder.

    The install writes the manifest where a build puts it (beside the tokenizer model), so sweeps record its hash.
    """
    model = served_tiny_bert(work / "model", NAME, max_batch_size=MAX_BATCH, max_seq_len=TOKENIZER_MAX_SEQ)
    model.manifest = {"name": NAME, "engine_max_seq_len": MAX_SEQ, "tokenizer_max_seq_len": TOKENIZER_MAX_SEQ}
    repository = work / "repository"
    # One ONNX Runtime thread: the server, perf_analyzer and the CPU baseline share the host's cores.
    install_into_repository(model, repository, work / "staging", options=ServingOptions(intra_op_threads=1))
    return repository
