"""Every model family builds offline with random weights (tiny configs, 2 layers), exports in agreement with
PyTorch, keeps the hybrid policy, and is served text-in over gRPC by one real Triton server; with them a
sentence-transformers folder pooled by CLS and normalised, and classification heads that answer label names."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from client.api import TritonTextClient
from toolkit.build import BuildRequest, build_model, model_from_manifest
from toolkit.errors import BadInputError
from toolkit.measurement.compare import cosine_rows
from toolkit.models.export import torch_module
from toolkit.models.families import FAMILIES, family_named, offline_ids
from toolkit.models.loading import load_model
from toolkit.models.tokenizers import minilm_folder
from toolkit.names import LABEL, NEXT_TOKEN_ID, PROBABILITIES, SENTENCE_EMBEDDING, Precision
from toolkit.repository.lookup import read_manifest
from toolkit.repository.naming import ensemble_model
from toolkit.serving import running_server

SMALL = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}
TINY: dict[str, dict[str, Any]] = {  # every shipped architecture, shrunk: 2 layers (ModernBERT 3: one global, two local)
    "bert-base-uncased": SMALL,
    "roberta-base": SMALL,
    "xlm-roberta-base": {**SMALL, "vocab_size": 8000},  # its offline Unigram vocabulary has ~2300 entries
    "distilbert-base-uncased": {"n_layers": 2, "dim": 64, "n_heads": 2, "hidden_dim": 128},
    "microsoft/mpnet-base": SMALL,
    "answerdotai/ModernBERT-base": {**SMALL, "num_hidden_layers": 3, "local_attention": 16},
    "gpt2": {"n_layer": 2, "n_embd": 64, "n_head": 2},
    "distilgpt2": {"n_layer": 2, "n_embd": 64, "n_head": 2},
}
TEXTS = ["Triton serves transformers fast.", "A cup of tea on a rainy afternoon is hard to beat, said the committee in March."]
MAX_SEQ = 64


def _name(spec: str) -> str:
    return spec.split("/")[-1].lower().replace("-base", "").replace("-uncased", "")


def _request(spec: str, **fields: Any) -> BuildRequest:
    base: dict[str, Any] = {"max_batch": 4, "min_seq": 1, "opt_seq": 16, "max_seq": MAX_SEQ, "runtimes": ("onnxruntime",)}
    return BuildRequest(model=spec, **{**base, **fields})


def _tiny_classifier(folder: Path, architecture: str, config_class: Any, overrides: dict[str, Any]) -> Path:
    """A classification checkpoint written with transformers' own API (random head, named labels)."""
    import transformers

    config = config_class(**overrides, num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"}, max_position_embeddings=130)
    torch.manual_seed(1)
    getattr(transformers, architecture)(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(minilm_folder()).save_pretrained(folder)
    return folder


def _cls_sentence_transformer(folder: Path) -> Path:
    """A tiny BERT saved as a sentence-transformers folder with CLS pooling and Normalize, by its own API."""
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    base = folder / "base"
    torch.manual_seed(2)
    transformers.BertModel(transformers.BertConfig(**SMALL, max_position_embeddings=128)).save_pretrained(base)
    transformers.AutoTokenizer.from_pretrained(minilm_folder()).save_pretrained(base)
    model = SentenceTransformer(modules=[Transformer(str(base), max_seq_length=48), Pooling(64, pooling_mode="cls"), Normalize()])
    model.save(str(folder / "st"))
    return folder / "st"


@pytest.fixture(scope="module")
def family_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every shipped architecture (hybrid), a CLS-pooled sentence-transformers folder and two classifiers (fp32)."""
    repository, work, made = (tmp_path_factory.mktemp(n) for n in ("families", "work", "checkpoints"))
    for spec, overrides in TINY.items():
        build_model(_request(spec, name=_name(spec), random_weights=True, config_overrides=overrides, precisions=(Precision.HYBRID,)),
                    repository, work, log=lambda _: None)  # fmt: skip
    import transformers

    bert = _tiny_classifier(made / "bert-cls", "BertForSequenceClassification", transformers.BertConfig, SMALL)
    distil = _tiny_classifier(made / "distil-cls", "DistilBertForSequenceClassification", transformers.DistilBertConfig, TINY["distilbert-base-uncased"])
    for name, folder in (("bertcls", bert), ("distilcls", distil)):
        build_model(_request(str(folder), name=name, precisions=(Precision.FP32,)), repository, work, log=lambda _: None)
    st_request = _request(str(_cls_sentence_transformer(made)), name="stcls", precisions=(Precision.FP32,), max_seq=None)
    build_model(st_request, repository, work, log=lambda _: None)
    return repository


@pytest.fixture(scope="module")
def family_client(family_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonTextClient]:
    with running_server(family_repository, state_dir=tmp_path_factory.mktemp("server"), timeout=600) as handle:
        yield TritonTextClient(f"127.0.0.1:{handle.ports.grpc}", retries=2)


def test_every_shipped_id_belongs_to_a_family_and_builds_offline() -> None:
    assert set(offline_ids()) == set(TINY)
    assert {family_named(read) for read in FAMILIES} == set(FAMILIES.values())


@pytest.mark.parametrize("spec", list(TINY))
def test_family_export_matches_pytorch_at_three_shapes_unlike_the_trace(family_repository: Path, spec: str) -> None:
    manifest = read_manifest(family_repository, _name(spec))
    assert manifest is not None and manifest["family"]["name"] in FAMILIES
    checks = manifest["export_checks"]
    assert {(c["batch"], c["seq"]) for c in checks} == {(1, 7), (3, 40), (4, 129)}  # the example traced is (2, 16)
    assert all(c["cosine_min"] >= 0.99999 for c in checks), checks


@pytest.mark.parametrize("spec", list(TINY))
def test_family_hybrid_graph_keeps_softmax_and_layernorm_fp32_and_every_matmul_fp16(family_repository: Path, spec: str) -> None:
    manifest = read_manifest(family_repository, _name(spec))
    assert manifest is not None
    census = manifest["variants"]["hybrid"]["node_precisions"]
    assert set(census["MatMul"]) == {"fp16"}, census["MatMul"]
    assert set(census["Softmax"]) == {"fp32"} and set(census["LayerNormalization"]) == {"fp32"}


@pytest.mark.parametrize("spec", list(TINY))
def test_family_ensemble_answers_text_over_grpc_as_pytorch_does(family_client: TritonTextClient, family_repository: Path, spec: str) -> None:
    name = _name(spec)
    manifest = read_manifest(family_repository, name)
    assert manifest is not None
    served = family_client.infer_text(ensemble_model(name, "hybrid"), TEXTS)  # one request: its rows padded to the longer
    model = model_from_manifest(manifest)
    wrapper, names = torch_module(model), [s.name for s in model.family.output_specs(model)]
    for row, text in enumerate(TEXTS):  # PyTorch FP32 on each text alone, unpadded
        tokens = model.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            expected = dict(zip(names, wrapper(*(tokens[n].to(torch.int64) for n in model.family.engine_inputs())), strict=True))
        if SENTENCE_EMBEDDING in served:
            assert cosine_rows(expected[SENTENCE_EMBEDDING].numpy(), served[SENTENCE_EMBEDDING][row : row + 1]).min() >= 0.999
        else:  # decoders: the next token
            assert int(served[NEXT_TOKEN_ID].reshape(-1)[row]) == int(expected[NEXT_TOKEN_ID].reshape(-1)[0])


def test_sentence_transformers_folder_serves_cls_pooled_normalised_vectors_equal_to_encode(family_client: TritonTextClient,
                                                                                           family_repository: Path) -> None:  # fmt: skip
    from sentence_transformers import SentenceTransformer

    manifest = read_manifest(family_repository, "stcls")
    assert manifest is not None and manifest["pooling"]["modes"] == ["cls"] and manifest["pooling"]["normalize"] is True
    assert manifest["shapes"]["sequence"][2] == 48  # the folder's own max_seq_length
    served = family_client.infer_text(ensemble_model("stcls", "fp32"), TEXTS)[SENTENCE_EMBEDDING]
    encoded = SentenceTransformer(manifest["source"]["source"], device="cpu").encode(TEXTS, convert_to_numpy=True)
    assert cosine_rows(encoded, served).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(served, axis=-1), 1.0, rtol=1e-3)


@pytest.mark.parametrize("name", ["bertcls", "distilcls"])
def test_classification_head_returns_logits_probabilities_and_label_names(family_client: TritonTextClient, family_repository: Path,
                                                                          name: str) -> None:  # fmt: skip
    out = family_client.infer_text(ensemble_model(name, "fp32"), TEXTS)
    manifest = read_manifest(family_repository, name)
    assert manifest is not None and manifest["task"] == "classification"
    np.testing.assert_allclose(out[PROBABILITIES].sum(-1), 1.0, rtol=1e-5)
    model = model_from_manifest(manifest)
    with torch.no_grad():  # transformers' own head, on each text alone (unpadded)
        tokens = [model.tokenizer([text], return_tensors="pt") for text in TEXTS]
        logits = np.concatenate([model.module(**{k: v for k, v in t.items() if k in model.family.engine_inputs()}).logits.numpy() for t in tokens])
    names = [model.config.id2label[i] for i in logits.argmax(-1)]
    assert [label.decode() for label in out[LABEL].reshape(-1)] == names
    assert cosine_rows(logits, out["logits"]).min() >= 0.9999


def test_hub_id_without_offline_weights_fails_within_seconds_naming_the_offline_ids() -> None:
    started = time.monotonic()
    with pytest.raises(BadInputError, match="pass --random-weights to build its architecture"):
        load_model("roberta-base")
    with pytest.raises(BadInputError, match=r"ids that build offline: minilm .*roberta-base, xlm-roberta-base"):
        load_model("no-such-org/no-such-model")
    assert time.monotonic() - started < 5.0


def test_sentence_transformers_pipeline_the_toolkit_cannot_reproduce_fails_with_the_module(tmp_path: Path) -> None:
    import json
    import shutil

    folder = tmp_path / "dense"
    shutil.copytree(minilm_folder(), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(BadInputError, match=r"cannot reproduce \['Dense'\]"):
        load_model(str(folder))


def test_modernbert_positions_and_masks_equal_transformers_own_and_export_without_shape_arithmetic(family_repository: Path) -> None:
    """ModernBERT's export computes positions and both masks from the inputs: the same hidden states as transformers'
    own arange-based masks (padded rows, a sequence well past the sliding window), and no Range node in the graph,
    whose shape arithmetic ONNX Runtime's CUDA provider would run on the CPU (no CUDA graph: 7.45 ms at b1 s128 on
    the H200 where torch.compile took 1.08)."""
    import onnx
    import transformers

    from toolkit.models.families.modernbert import FAMILY

    special = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, "cls_token_id": 2, "sep_token_id": 1}
    config = transformers.ModernBertConfig(**TINY["answerdotai/ModernBERT-base"], vocab_size=500, **special)
    torch.manual_seed(0)
    model = transformers.ModernBertModel(config).eval()
    model.config._attn_implementation = "eager"
    ids = torch.randint(5, 500, (3, 40))  # 40 tokens: |query - key| reaches past the half window of 8
    mask = torch.ones_like(ids)
    mask[1, 25:], mask[2, 9:] = 0, 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        positions, masks = FAMILY.positions_and_masks(model.config, ids, mask)
        ours = model(input_ids=ids, attention_mask=masks, position_ids=positions).last_hidden_state
    assert torch.equal(ours, expected)
    graph = onnx.load(str(family_repository / "modernbert_hybrid_onnx" / "1" / "model.onnx"), load_external_data=False)
    assert not [node.name for node in graph.graph.node if node.op_type == "Range"]
