"""Config generation and repository layout, without a server."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from toolkit.artifacts import EngineArtifact, ServedModel, TensorSpec
from toolkit.errors import BadInputError
from toolkit.names import DEFAULT_PRECISIONS, Precision
from toolkit.repository.configs import (
    ServingOptions,
    config_for_engine,
    config_for_ensemble,
    config_for_labels,
    config_for_tokenizer,
)
from toolkit.repository.layout import validate_repository, write_model_repository
from toolkit.repository.naming import engine_model, ensemble_model, labels_model, tokenizer_model

HIDDEN, VOCAB, LABELS = 16, 100, 3
ENCODER, DECODER, CLASSIFIER = "encoder", "decoder", "classifier"
ENCODER_OUTPUTS = (TensorSpec("last_hidden_state", (-1, HIDDEN)), TensorSpec("sentence_embedding", (HIDDEN,)))
KINDS: dict[str, tuple[tuple[str, ...], tuple[TensorSpec, ...], tuple[str, ...]]] = {  # engine inputs, engine outputs, ensemble outputs
    ENCODER: (("input_ids", "attention_mask", "token_type_ids"), ENCODER_OUTPUTS, ("sentence_embedding",)),
    DECODER: (
        ("input_ids", "attention_mask"),
        (TensorSpec("logits", (-1, VOCAB)), TensorSpec("next_token_logits", (VOCAB,)), TensorSpec("next_token_id", (1,), "TYPE_INT64")),
        ("next_token_logits", "next_token_id"),
    ),
    CLASSIFIER: (
        ("input_ids", "attention_mask"),
        (*ENCODER_OUTPUTS, TensorSpec("logits", (LABELS,)), TensorSpec("probabilities", (LABELS,)), TensorSpec("label_id", (1,), "TYPE_INT64")),
        ("sentence_embedding", "logits", "probabilities", "label"),
    ),
}


def _served(tmp_path: Path, kind: str, runtimes: tuple[str, ...] = ("onnxruntime",)) -> ServedModel:
    """A ServedModel whose files are placeholders: layout tests never open them."""
    tokenizer_dir = tmp_path / f"{kind}_tokenizer"
    tokenizer_dir.mkdir(parents=True)
    (tokenizer_dir / "tokenizer.json").write_text("{}")
    (tokenizer_dir / "vocab.txt").write_text("[PAD]\n")
    inputs, outputs, returned = KINDS[kind]
    engines = []
    for runtime in runtimes:
        for precision in DEFAULT_PRECISIONS:
            path = tmp_path / f"{kind}_{precision.value}_{runtime}.bin"
            path.write_bytes(b"engine")
            engines.append(EngineArtifact(precision, runtime, path, outputs))
    labels = {0: "negative", 1: "neutral", 2: "positive"} if kind == CLASSIFIER else {}
    return ServedModel(
        name="m", family=kind, tokenizer_dir=tokenizer_dir, engine_inputs=inputs, ensemble_outputs=returned,
        max_batch_size=4, max_seq_len=32, min_seq_len=8, labels=labels, engines=engines,
    )  # fmt: skip


def _roundtrip(config: model_config_pb2.ModelConfig) -> model_config_pb2.ModelConfig:
    parsed = text_format.Parse(text_format.MessageToString(config), model_config_pb2.ModelConfig())
    assert parsed == config
    return parsed


def _tensors(entries: object) -> dict[str, tuple[str, list[int]]]:
    return {
        t.name: (model_config_pb2.DataType.Name(t.data_type), list(t.dims))
        for t in entries  # type: ignore[attr-defined]
    }


def test_config_for_tokenizer_declares_text_in_and_token_tensors_out_when_encoder_takes_token_types(tmp_path: Path) -> None:
    config = _roundtrip(config_for_tokenizer(_served(tmp_path, ENCODER)))
    assert (config.name, config.backend, config.max_batch_size) == (tokenizer_model("m"), "python", 4)
    assert _tensors(config.input) == {"TEXT": ("TYPE_STRING", [1])}
    assert _tensors(config.output) == {
        "input_ids": ("TYPE_INT64", [-1]),
        "attention_mask": ("TYPE_INT64", [-1]),
        "token_type_ids": ("TYPE_INT64", [-1]),
        "truncated": ("TYPE_BOOL", [1]),
    }
    assert config.parameters["max_seq_len"].string_value == "32"
    assert config.parameters["min_seq_len"].string_value == "8"
    assert config.HasField("dynamic_batching")


def test_config_for_tokenizer_omits_token_type_ids_when_engine_takes_none(tmp_path: Path) -> None:
    config = _roundtrip(config_for_tokenizer(_served(tmp_path, DECODER)))
    assert list(_tensors(config.output)) == ["input_ids", "attention_mask", "truncated"]


@pytest.mark.parametrize(
    ("runtime", "platform", "kind", "parameters"),
    [
        ("onnxruntime", "onnxruntime_onnx", "KIND_CPU", {"intra_op_thread_count": "2"}),
        ("tensorrt", "tensorrt_plan", "KIND_GPU", {}),  # TensorRT runs on GPUs only, and reads no parameters
    ],
)
def test_config_for_engine_uses_runtime_platform_and_instances_when_no_gpu(
    tmp_path: Path, runtime: str, platform: str, kind: str, parameters: dict[str, str]
) -> None:
    model = _served(tmp_path, ENCODER, (runtime,))
    engine = model.engines[1]
    config = _roundtrip(config_for_engine(model, engine, ServingOptions(max_queue_delay_us=500, intra_op_threads=2)))
    assert config.name == engine_model("m", engine.precision, runtime)
    assert config.platform == platform
    assert list(_tensors(config.input)) == list(("input_ids", "attention_mask", "token_type_ids"))
    assert _tensors(config.output) == {"last_hidden_state": ("TYPE_FP32", [-1, HIDDEN]), "sentence_embedding": ("TYPE_FP32", [HIDDEN])}
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind) for g in config.instance_group] == [kind]
    assert {key: value.string_value for key, value in config.parameters.items()} == parameters
    assert not config.HasField("optimization")


def test_config_for_engine_places_instances_on_gpu_with_cuda_graphs_when_asked(tmp_path: Path) -> None:
    model = _served(tmp_path, DECODER)
    options = ServingOptions(gpu=True, engine_instances=2, cuda_graphs=True)
    config = _roundtrip(config_for_engine(model, model.engines[0], options))
    (group,) = config.instance_group
    assert (model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind), group.count) == ("KIND_GPU", 2)
    assert config.parameters["enable_cuda_graph"].string_value == "1"
    assert config.parameters["cuda_graph_batch_buckets"].string_value == "pow2"
    stepped = _roundtrip(config_for_engine(model, model.engines[0], replace(options, batch_buckets="8")))
    assert stepped.parameters["cuda_graph_batch_buckets"].string_value == "8"
    unpadded = _roundtrip(config_for_engine(model, model.engines[0], replace(options, batch_buckets="off")))
    assert "cuda_graph_batch_buckets" not in unpadded.parameters and unpadded.parameters["enable_cuda_graph"].string_value == "1"


def test_tokenizer_threads_reach_the_tokenizer_config_only_when_set(tmp_path: Path) -> None:
    model = _served(tmp_path, ENCODER)
    assert "tokenizer_threads" not in config_for_tokenizer(model, ServingOptions()).parameters
    assert config_for_tokenizer(model, ServingOptions(tokenizer_threads=3)).parameters["tokenizer_threads"].string_value == "3"
    with pytest.raises(BadInputError, match="--tokenizer-threads"):
        ServingOptions(tokenizer_threads=-1)


def test_config_for_engine_rejects_engine_when_an_ensemble_output_is_missing(tmp_path: Path) -> None:
    model = _served(tmp_path, ENCODER)
    engine = EngineArtifact(Precision.FP32, "onnxruntime", tmp_path / "x.onnx", (TensorSpec("pooler_output", (HIDDEN,)),))
    with pytest.raises(BadInputError, match=r"must also output \['sentence_embedding'\] for the text ensemble"):
        config_for_engine(model, engine)


@pytest.mark.parametrize(
    ("options", "graphs", "buckets", "delay"),
    [
        (ServingOptions(), None, "", 0),  # CPU: pad to the longest row, no graphs, no waiting
        (ServingOptions(gpu=True), "1", "16,32", 0),  # GPU: graphs and power-of-two buckets from 16
        (ServingOptions(gpu=True, cuda_graphs=False, seq_buckets=(4, 12, 64), max_queue_delay_us=50), None, "12,32", 50),
        (ServingOptions(gpu=True, seq_buckets=()), "1", "", 0),
    ],
)
def test_serving_defaults_follow_the_device_when_options_are_left_out(
    tmp_path: Path, options: ServingOptions, graphs: str | None, buckets: str, delay: int
) -> None:
    model = _served(tmp_path, ENCODER)  # min_seq_len 8, max_seq_len 32
    engine = _roundtrip(config_for_engine(model, model.engines[0], options))
    tokenizer = _roundtrip(config_for_tokenizer(model, options))
    assert (engine.parameters["enable_cuda_graph"].string_value if "enable_cuda_graph" in engine.parameters else None) == graphs
    assert tokenizer.parameters["seq_buckets"].string_value == buckets
    assert engine.dynamic_batching.max_queue_delay_microseconds == tokenizer.dynamic_batching.max_queue_delay_microseconds == delay


@pytest.mark.parametrize("buckets", [(0, 8), (16, 8), (8, 8)])
def test_serving_options_rejects_buckets_when_not_increasing_positive(buckets: tuple[int, ...]) -> None:
    with pytest.raises(BadInputError, match="--seq-buckets"):
        ServingOptions(gpu=True, seq_buckets=buckets)


def test_no_dynamic_batching_leaves_the_batcher_out_of_tokenizer_and_engine(tmp_path: Path) -> None:
    model = _served(tmp_path, ENCODER)
    options = ServingOptions(gpu=True, dynamic_batching=False)
    for config in (_roundtrip(config_for_engine(model, model.engines[0], options)), _roundtrip(config_for_tokenizer(model, options))):
        assert config.WhichOneof("scheduling_choice") is None and config.max_batch_size == 4  # still batched by the client
    assert (
        _roundtrip(config_for_engine(model, model.engines[0], ServingOptions(gpu=True))).WhichOneof("scheduling_choice")
        == "dynamic_batching"
    )
    with pytest.raises(BadInputError, match="needs the dynamic batcher"):
        ServingOptions(dynamic_batching=False, max_queue_delay_us=10)


def test_serving_options_rejects_cuda_graphs_when_not_on_gpu() -> None:
    with pytest.raises(BadInputError, match="--gpu"):
        ServingOptions(cuda_graphs=True)


def test_config_for_ensemble_chains_tokenizer_then_engine_when_encoder(tmp_path: Path) -> None:
    config = _roundtrip(config_for_ensemble(_served(tmp_path, ENCODER), Precision.HYBRID, "tensorrt"))
    assert (config.name, config.platform) == (ensemble_model("m", "hybrid", "tensorrt"), "ensemble")
    assert [s.model_name for s in config.ensemble_scheduling.step] == [tokenizer_model("m"), engine_model("m", "hybrid", "tensorrt")]
    assert _tensors(config.output) == {"sentence_embedding": ("TYPE_FP32", [HIDDEN]), "truncated": ("TYPE_BOOL", [1])}
    assert dict(config.ensemble_scheduling.step[1].output_map) == {"sentence_embedding": "sentence_embedding"}
    produced = {value for step in config.ensemble_scheduling.step for value in step.output_map.values()}
    consumed = {value for step in config.ensemble_scheduling.step for value in step.input_map.values()}
    assert consumed <= produced | {"TEXT"}
    assert set(_tensors(config.output)) <= produced


def test_config_for_ensemble_outputs_next_token_when_decoder(tmp_path: Path) -> None:
    config = _roundtrip(config_for_ensemble(_served(tmp_path, DECODER), Precision.FP16))
    assert config.name == "m_fp16"
    assert _tensors(config.output) == {
        "next_token_logits": ("TYPE_FP32", [VOCAB]), "next_token_id": ("TYPE_INT64", [1]), "truncated": ("TYPE_BOOL", [1]),
    }  # fmt: skip
    model = _served(tmp_path / "engine", DECODER)
    assert _tensors(_roundtrip(config_for_engine(model, model.engines[0])).output)["next_token_id"] == ("TYPE_INT64", [1])


def test_write_model_repository_writes_every_model_and_file_when_all_runtimes(tmp_path: Path) -> None:
    model = _served(tmp_path, ENCODER, ("onnxruntime", "tensorrt"))
    root = tmp_path / "repository"
    names = write_model_repository(root, model)
    assert len(names) == 1 + 2 * len(model.engines)
    assert set(validate_repository(root)) == set(names)
    assert (root / "m_tokenizer/1/model.py").read_text().startswith('"""Triton Python backend: TEXT')
    assert {p.name for p in (root / "m_tokenizer/1/tokenizer").iterdir()} == {"tokenizer.json", "vocab.txt"}
    assert (root / "m_fp16_onnx/1/model.onnx").read_bytes() == b"engine"
    assert (root / "m_hybrid_plan/1/model.plan").read_bytes() == b"engine"
    assert list((root / "m_fp32_trt/1").iterdir()) == [] and list((root / "m_fp32/1").iterdir()) == []


def test_write_model_repository_writes_onnx_models_when_one_runtime(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    names = write_model_repository(root, _served(tmp_path, DECODER), gpu=True)
    assert sorted(names) == sorted(["m_tokenizer", "m_fp32_onnx", "m_fp32", "m_fp16_onnx",
                                    "m_fp16", "m_hybrid_onnx", "m_hybrid"])  # fmt: skip
    configs = validate_repository(root)
    assert configs["m_fp32_onnx"].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert configs["m_tokenizer"].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_write_model_repository_copies_onnx_external_data_when_beside_engine(tmp_path: Path) -> None:
    model = _served(tmp_path, DECODER)
    engine = model.engines[0]
    engine.path.with_name(engine.path.name + ".data").write_bytes(b"weights")
    write_model_repository(tmp_path / "repository", model)
    assert (tmp_path / "repository/m_fp32_onnx/1" / (engine.path.name + ".data")).read_bytes() == b"weights"


def test_write_model_repository_rejects_model_when_tokenizer_json_and_engines_are_missing(tmp_path: Path) -> None:
    model = _served(tmp_path, ENCODER)
    (model.tokenizer_dir / "tokenizer.json").unlink()
    model.engines[0].path.unlink()
    with pytest.raises(BadInputError, match=r"no tokenizer\.json.*does not exist"):
        write_model_repository(tmp_path / "repository", model)


def test_validate_repository_lists_every_problem_when_configs_disagree(tmp_path: Path) -> None:
    root = tmp_path / "repository"
    write_model_repository(root, _served(tmp_path, DECODER))
    (root / "renamed").mkdir()
    (root / "m_fp32/config.pbtxt").rename(root / "renamed/config.pbtxt")
    (root / "m_tokenizer/config.pbtxt").write_text('name: "m_tokenizer"\nbogus_field: 1\n')
    with pytest.raises(BadInputError, match=r"m_tokenizer/config\.pbtxt: not a valid Triton config"):
        validate_repository(root)
    (root / "m_tokenizer").rename(tmp_path / "gone")
    with pytest.raises(BadInputError) as raised:
        validate_repository(root)
    message = str(raised.value)
    assert "names the model 'm_fp32'" in message and "no version folder" in message and "lacks" in message


def test_classifier_ensemble_ends_with_the_labels_model_that_names_the_engines_label_id(tmp_path: Path) -> None:
    model = _served(tmp_path, CLASSIFIER)
    config = _roundtrip(config_for_ensemble(model, Precision.FP16))
    steps = config.ensemble_scheduling.step
    assert [s.model_name for s in steps] == [tokenizer_model("m"), engine_model("m", "fp16"), labels_model("m")]
    assert dict(steps[1].output_map)["label_id"] == "label_id" and dict(steps[2].input_map) == {"label_id": "label_id"}
    assert _tensors(config.output) == {
        "sentence_embedding": ("TYPE_FP32", [HIDDEN]), "logits": ("TYPE_FP32", [LABELS]), "probabilities": ("TYPE_FP32", [LABELS]),
        "label": ("TYPE_STRING", [1]), "truncated": ("TYPE_BOOL", [1]),
    }  # fmt: skip
    labels = _roundtrip(config_for_labels(model))
    assert labels.backend == "python" and labels.parameters["id2label"].string_value == '{"0": "negative", "1": "neutral", "2": "positive"}'
    root = tmp_path / "repository"
    assert labels_model("m") in write_model_repository(root, model)
    assert (root / "m_labels/1/model.py").read_text().startswith('"""Triton Python backend: a classifier')
    with pytest.raises(BadInputError, match="only a classification head"):
        config_for_labels(_served(tmp_path / "plain", ENCODER))


@pytest.mark.parametrize("runtime", ["onnxruntime", "tensorrt"])
def test_gpus_put_each_engines_instances_on_every_listed_gpu_and_scale_the_tokenizer(tmp_path: Path, runtime: str) -> None:
    model = _served(tmp_path, ENCODER, (runtime,))
    options = ServingOptions(gpu=True, gpus=(0, 1), engine_instances=2, tokenizer_instances=3)
    engine = _roundtrip(config_for_engine(model, model.engines[0], options))
    groups = [(model_config_pb2.ModelInstanceGroup.Kind.Name(g.kind), g.count, list(g.gpus)) for g in engine.instance_group]
    assert groups == [("KIND_GPU", 2, [0]), ("KIND_GPU", 2, [1])]
    (tokenizer,) = _roundtrip(config_for_tokenizer(model, options)).instance_group
    assert (model_config_pb2.ModelInstanceGroup.Kind.Name(tokenizer.kind), tokenizer.count) == ("KIND_CPU", 6)
    every_gpu = _roundtrip(config_for_engine(model, model.engines[0], ServingOptions(gpu=True, engine_instances=2)))
    assert [(g.count, list(g.gpus)) for g in every_gpu.instance_group] == [(2, [])]  # Triton places them on each GPU it sees


@pytest.mark.parametrize("gpus", [(), (0, 0), (-1,)])
def test_serving_options_rejects_gpus_when_empty_repeated_or_negative(gpus: tuple[int, ...]) -> None:
    with pytest.raises(BadInputError, match="distinct GPU indices"):
        ServingOptions(gpu=True, gpus=gpus)
    with pytest.raises(BadInputError, match="without --cpu"):
        ServingOptions(gpu=False, gpus=(0,))


@pytest.mark.parametrize("spelling", ["on", "1", "0", "7.5", "-8"])
def test_serving_options_refuse_a_batch_bucket_spelling_and_name_the_ones_they_take(spelling: str) -> None:
    with pytest.raises(BadInputError, match=r"--batch-buckets .*expected off, pow2 or an integer step >= 2"):
        ServingOptions(gpu=True, batch_buckets=spelling)
