"""Every generated engine config against what NVIDIA's native backends read (``SERVER=docker make serve``).

No Docker engine and no GPU exist here, so the NGC container (``nvcr.io/nvidia/tritonserver:24.10-py3``,
Triton 2.51) never loads these configs in a test. Instead the table below encodes, field by field, what its
native ``onnxruntime`` and ``tensorrt`` backends read, accept and refuse, taken from their documentation and
source on the ``r24.10`` branches (URL beside each entry); every config the repository writer can generate is
checked against it, and the ONNX Runtime backend's shape and type rules are replayed on real exported graphs.
README, "Serving in NVIDIA's container", lists the differences for a reader.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from google.protobuf import json_format, text_format
from tiny_models import exported_onnx, served_tiny_bert
from tritonclient.grpc import model_config_pb2

from toolkit.artifacts import EngineArtifact, ServedModel, TensorSpec
from toolkit.models.export import output_specs
from toolkit.models.loading import load_model
from toolkit.names import Precision
from toolkit.repository.configs import ServingOptions, config_for_engine
from toolkit.runtimes import RUNTIMES

ORT_README = "https://github.com/triton-inference-server/onnxruntime_backend/blob/r24.10/README.md"
ORT_SOURCE = "https://github.com/triton-inference-server/onnxruntime_backend/blob/r24.10/src/onnxruntime.cc"
ORT_DIMS = "https://github.com/triton-inference-server/onnxruntime_backend/blob/r24.10/src/onnxruntime_utils.cc"  # CompareDimsSupported
ORT_CUDA_GRAPHS_ISSUE = "https://github.com/triton-inference-server/onnxruntime_backend/issues/168"
# TensorRT backend source: model_state.cc, tensorrt_model.cc, instance_state.cc
TRT_SOURCE = "https://github.com/triton-inference-server/tensorrt_backend/blob/r24.10/src/"
MODEL_CONFIG_PROTO = "https://github.com/triton-inference-server/common/blob/r24.10/protobuf/model_config.proto"


def _int_at_least(low: int) -> Callable[[str], bool]:
    return lambda value: value.lstrip("-").isdigit() and int(value) >= low


def _one_of(*values: str) -> Callable[[str], bool]:
    return lambda value: value in values


@dataclass(frozen=True)
class NativeBackend:
    """What one native backend of NVIDIA's container reads from a model config."""

    platform: str
    default_model_filename: str
    instance_kinds: frozenset[str]
    # Model-level ``parameters`` it reads, each with the rule its value must meet.
    parameters_read: dict[str, Callable[[str], bool]]
    # Our earlier names for a parameter the native backend reads under another name: never generate them.
    renamed: dict[str, str]
    # Parameters only our Python-based backends read; the native backend ignores them (README says so).
    ours_only: frozenset[str]
    # Paths under ``optimization`` it reads; anything else there would be ignored by it, so it is not generated.
    optimization_read: frozenset[str]
    # Execution accelerators it accepts, with parameter keys that must not be passed to them.
    gpu_accelerators: dict[str, frozenset[str]]


NATIVE = {
    "onnxruntime": NativeBackend(
        platform="onnxruntime_onnx",  # ORT_README
        default_model_filename="model.onnx",  # ORT_SOURCE: the default when default_model_filename is empty
        instance_kinds=frozenset({"KIND_CPU", "KIND_GPU"}),  # CPU EP, or CUDA EP on the instance's GPU (ORT_SOURCE)
        parameters_read={  # ORT_README "Model Config Options" and "Deprecated Parameters"; ORT_SOURCE
            "intra_op_thread_count": _int_at_least(0),
            "inter_op_thread_count": _int_at_least(0),
            "execution_mode": _one_of("0", "1"),
            "enable_mem_arena": _one_of("0", "1"),
            "enable_mem_pattern": _one_of("0", "1"),
            "memory.enable_memory_arena_shrinkage": lambda value: bool(value),
            "cudnn_conv_algo_search": _one_of("0", "1", "2"),
            "gpu_mem_limit": _int_at_least(1),
            "arena_extend_strategy": _one_of("0", "1"),
            "do_copy_in_default_stream": _one_of("0", "1"),
        },
        renamed={"intra_op_threads": "intra_op_thread_count"},
        # toolkit/backends/onnxruntime/model.py; the native backend has no CUDA-graph option (ORT_CUDA_GRAPHS_ISSUE).
        ours_only=frozenset({"enable_cuda_graph", "cuda_graph_max_shapes", "cuda_graph_batch_buckets"}),
        optimization_read=frozenset(
            {"graph.level", "execution_accelerators.gpu_execution_accelerator", "execution_accelerators.cpu_execution_accelerator"}
        ),
        # ORT_README: "cuda" passes its parameters to the CUDA EP as they are, "tensorrt" to the TensorRT EP.
        # enable_cuda_graph must not reach the CUDA EP there: ONNX Runtime replays a graph on the buffers it was
        # captured with, and the native backend binds each request's own buffers (ORT_SOURCE, BindInput).
        gpu_accelerators={"cuda": frozenset({"enable_cuda_graph"}), "tensorrt": frozenset()},
    ),
    "tensorrt": NativeBackend(
        platform="tensorrt_plan",
        default_model_filename="model.plan",  # TRT_SOURCE model_state.cc
        # TRT_SOURCE instance_state.cc: "TensorRT backend supports only GPU device" for any other kind.
        instance_kinds=frozenset({"KIND_GPU"}),
        parameters_read={},  # TRT_SOURCE model_state.cc: ModelState::ParseParameters reads none at r24.10
        renamed={"enable_cuda_graph": "optimization.cuda.graphs"},
        ours_only=frozenset(),
        # TRT_SOURCE tensorrt_model.cc: optimization.cuda.{graphs, busy_wait_events, graph_spec, output_copy_stream},
        # optimization.eager_batching, optimization.priority.
        optimization_read=frozenset({"cuda.graphs", "cuda.graph_spec", "cuda.busy_wait_events", "cuda.output_copy_stream"}),
        gpu_accelerators={},
    ),
}


def _optimization_paths(config: model_config_pb2.ModelConfig) -> set[str]:
    """Dotted paths of what is set under ``optimization``: ``cuda.<field>``, ``graph.level``, the accelerator lists."""
    paths = set()
    for field, value in config.optimization.ListFields():
        if field.name in ("cuda", "graph", "execution_accelerators"):
            paths |= {f"{field.name}.{inner.name}" for inner, _ in value.ListFields()}
        elif field.name not in ("input_pinned_memory", "output_pinned_memory"):  # Triton's core, not the backend
            paths.add(field.name)
    return paths


def native_backend_errors(config: model_config_pb2.ModelConfig, runtime: str, model: ServedModel) -> list[str]:
    """Every way ``config`` departs from what ``runtime``'s native backend in NVIDIA's container reads."""
    native = NATIVE[runtime]
    errors = []
    where = config.name

    def expect(ok: bool, message: str) -> None:
        if not ok:
            errors.append(f"{where}: {message}")

    expect(config.platform == native.platform, f"platform {config.platform!r}, native backend serves {native.platform!r}")
    expect(
        config.default_model_filename in ("", native.default_model_filename),
        f"default_model_filename {config.default_model_filename!r} (expected {native.default_model_filename!r})",
    )
    for group in config.instance_group:
        kind = model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind)
        expect(kind in native.instance_kinds, f"instance kind {kind}, native backend accepts {sorted(native.instance_kinds)}")
    for key, value in config.parameters.items():
        if key in native.renamed:
            errors.append(f"{where}: parameter {key!r}: the native backend reads this as {native.renamed[key]!r}")
        elif key in native.parameters_read:
            expect(native.parameters_read[key](value.string_value), f"parameter {key}={value.string_value!r} breaks the native rule")
        else:
            expect(key in native.ours_only, f"parameter {key!r} is neither read by the native backend nor documented as ours alone")
    for path in _optimization_paths(config):
        expect(path in native.optimization_read, f"optimization.{path} is not read by the native backend")
    accelerators = config.optimization.execution_accelerators
    for accelerator in accelerators.gpu_execution_accelerator:
        expect(accelerator.name in native.gpu_accelerators, f"GPU accelerator {accelerator.name!r} unknown to the native backend")
        refused = set(accelerator.parameters) & native.gpu_accelerators.get(accelerator.name, frozenset())
        expect(not refused, f"accelerator {accelerator.name!r} must not get {sorted(refused)}")
    cuda = config.optimization.cuda
    input_names = {tensor.name: len(tensor.dims) for tensor in config.input}
    for spec in cuda.graph_spec:  # TRT_SOURCE instance_state.cc ValidateGraphSpec and SetCudaGraphShape
        expect(1 <= spec.batch_size <= config.max_batch_size, f"graph_spec batch {spec.batch_size} outside 1..{config.max_batch_size}")
        expect(set(spec.input) == set(input_names), f"graph_spec inputs {sorted(spec.input)}, engine inputs {sorted(input_names)}")
        for name, shape in spec.input.items():
            dims = list(shape.dim)
            expect(len(dims) == input_names.get(name), f"graph_spec {name} dims {dims}: config dims have {input_names.get(name)}")
            # Each graph must lie inside the TensorRT profile (sequence min..max of the build).
            expect(all(model.min_seq_len <= d <= model.max_seq_len for d in dims), f"graph_spec {name} dims {dims} outside the profile")
    if cuda.graph_spec:
        expect(cuda.graphs, "graph_spec without optimization.cuda.graphs")
    return errors


HIDDEN, VOCAB = 16, 100


ENCODER, DECODER = "encoder", "decoder"
KINDS = (ENCODER, DECODER)


def _served(tmp_path: Path, family: str) -> ServedModel:
    """Placeholder files: config generation never opens them."""
    tokenizer_dir = tmp_path / f"{family}_tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    if family == ENCODER:
        outputs: tuple[TensorSpec, ...] = (TensorSpec("last_hidden_state", (-1, HIDDEN)), TensorSpec("sentence_embedding", (HIDDEN,)))
    else:
        outputs = (
            TensorSpec("logits", (-1, VOCAB)),
            TensorSpec("next_token_logits", (VOCAB,)),
            TensorSpec("next_token_id", (1,), "TYPE_INT64"),
        )
    engines = [
        EngineArtifact(precision, runtime, tmp_path / f"{family}_{precision.value}.{runtime}", outputs)
        for runtime in RUNTIMES
        for precision in Precision
    ]
    inputs = ("input_ids", "attention_mask", "token_type_ids") if family == ENCODER else ("input_ids", "attention_mask")
    returned = ("sentence_embedding",) if family == ENCODER else ("next_token_logits", "next_token_id")
    return ServedModel(
        name=family, family=family, tokenizer_dir=tokenizer_dir, engine_inputs=inputs, ensemble_outputs=returned,
        max_batch_size=32, max_seq_len=512, min_seq_len=32, engines=engines,
    )  # fmt: skip


# Every kind of engine config the writer makes: CPU and GPU, graphs on and off, threads, buckets, batching.
OPTIONS = [
    ServingOptions(),
    ServingOptions(intra_op_threads=4, engine_instances=2, max_queue_delay_us=100),
    ServingOptions(dynamic_batching=False),
    ServingOptions(gpu=True),
    ServingOptions(gpu=True, cuda_graphs=False),
    ServingOptions(gpu=True, seq_buckets=()),
    ServingOptions(gpu=True, seq_buckets=(8, 48, 128), intra_op_threads=1),
]


def test_every_generated_engine_config_meets_the_native_backends_rules(tmp_path: Path) -> None:
    errors = []
    for family, options in itertools.product(KINDS, OPTIONS):
        model = _served(tmp_path, family)
        for engine in model.engines:
            config = config_for_engine(model, engine, options)
            assert text_format.Parse(text_format.MessageToString(config), model_config_pb2.ModelConfig()) == config
            errors += [f"{options}: {error}" for error in native_backend_errors(config, engine.runtime, model)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    ("runtime", "change", "complaint"),
    [
        ("onnxruntime", {"parameters": {"intra_op_threads": {"string_value": "2"}}}, "reads this as 'intra_op_thread_count'"),
        ("onnxruntime", {"parameters": {"intra_op_thread_count": {"string_value": "two"}}}, "breaks the native rule"),
        ("onnxruntime", {"parameters": {"use_cuda_graphs": {"string_value": "1"}}}, "neither read by the native backend"),
        ("onnxruntime", {"optimization": {"cuda": {"graphs": True}}}, "optimization.cuda.graphs is not read"),
        (
            "onnxruntime",
            {
                "optimization": {
                    "execution_accelerators": {"gpu_execution_accelerator": [{"name": "cuda", "parameters": {"enable_cuda_graph": "1"}}]}
                }
            },
            "must not get ['enable_cuda_graph']",
        ),
        ("tensorrt", {"instance_group": [{"kind": "KIND_CPU"}]}, "instance kind KIND_CPU"),
        ("tensorrt", {"parameters": {"enable_cuda_graph": {"string_value": "1"}}}, "'optimization.cuda.graphs'"),
        ("tensorrt", {"optimization": {"cuda": {"graphs": True, "graph_spec": [{"batch_size": 64}]}}}, "graph_spec batch 64 outside"),
    ],
)
def test_native_backend_errors_names_the_field_when_a_config_breaks_a_rule(
    tmp_path: Path, runtime: str, change: dict[str, object], complaint: str
) -> None:
    model = _served(tmp_path, ENCODER)
    engine = next(engine for engine in model.engines if engine.runtime is runtime)
    config = config_for_engine(model, engine, ServingOptions(gpu=True, cuda_graphs=False))
    if "instance_group" in change:
        del config.instance_group[:]
    json_format.ParseDict(change, config)
    assert any(complaint in error for error in native_backend_errors(config, runtime, model)), native_backend_errors(config, runtime, model)


def test_gpu_configs_carry_what_the_native_backends_read_for_cuda_graphs_and_tf32(tmp_path: Path) -> None:
    model = _served(tmp_path, DECODER)  # min_seq_len 32, max_seq_len 512, max_batch_size 32
    options = ServingOptions(gpu=True, seq_buckets=(64, 256))
    onnx_config, plan_config = (config_for_engine(model, model.engines[i], options) for i in (0, len(Precision)))
    (cuda,) = onnx_config.optimization.execution_accelerators.gpu_execution_accelerator
    assert (cuda.name, dict(cuda.parameters)) == ("cuda", {"use_tf32": "0"})
    assert onnx_config.parameters["enable_cuda_graph"].string_value == "1"  # ours: the native backend ignores it
    assert plan_config.optimization.cuda.graphs
    specs = {(spec.batch_size, tuple(spec.input["input_ids"].dim)) for spec in plan_config.optimization.cuda.graph_spec}
    assert specs == {(batch, (seq,)) for batch in (1, 2, 4, 8, 16, 32) for seq in (64, 256, 512)}
    assert not plan_config.parameters


# ONNX element types of the tensors we declare (model_config DataType -> TensorProto).
ONNX_TYPE = {"TYPE_INT64": onnx.TensorProto.INT64, "TYPE_FP32": onnx.TensorProto.FLOAT, "TYPE_FP16": onnx.TensorProto.FLOAT16}


def native_onnx_shape_errors(config: model_config_pb2.ModelConfig, path: Path) -> list[str]:
    """The native onnxruntime backend's load-time checks (ORT_SOURCE ValidateInputs/ValidateOutputs, ORT_DIMS):
    same input count, same element types, the batch dimension dynamic, inputs' dims matching where the model
    fixes them and outputs' dims matching exactly (-1 where the model's dim is symbolic)."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def shapes(values: object) -> dict[str, tuple[int, list[int]]]:
        return {
            v.name: (v.type.tensor_type.elem_type, [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
            for v in values  # type: ignore[attr-defined]
        }

    inputs, outputs = shapes(graph.input), shapes(graph.output)
    errors = []
    if len(inputs) != len(config.input):
        errors.append(f"{config.name}: config has {len(config.input)} inputs, the graph {len(inputs)}")
    for tensors, found, exact in ((config.input, inputs, False), (config.output, outputs, True)):
        for tensor in tensors:
            if tensor.name not in found:
                errors.append(f"{config.name}: {tensor.name} is not in the graph")
                continue
            elem_type, model_dims = found[tensor.name]
            data_type = model_config_pb2.DataType.Name(tensor.data_type)
            if ONNX_TYPE[data_type] != elem_type:
                errors.append(f"{config.name}: {tensor.name} is {data_type}, the graph's element type {elem_type}")
            full = [-1, *tensor.dims] if config.max_batch_size > 0 else list(tensor.dims)
            if config.max_batch_size > 0 and (not model_dims or model_dims[0] != -1):
                errors.append(f"{config.name}: {tensor.name} {model_dims}: batching needs a dynamic first dimension")
            same = len(model_dims) == len(full) and all(m == c for m, c in zip(model_dims, full, strict=False) if exact or m != -1)
            if not same:
                errors.append(f"{config.name}: {tensor.name} config {full} vs graph {model_dims}")
    return errors


@pytest.fixture(scope="module")
def exported_models(tmp_path_factory: pytest.TempPathFactory) -> list[ServedModel]:
    """Tiny BERT and GPT-2 exported by the project's own exporter: the graphs the repository ships."""
    bert = served_tiny_bert(tmp_path_factory.mktemp("bert"), "tinybert", max_batch_size=4, max_seq_len=32)
    folder = tmp_path_factory.mktemp("gpt2")
    overrides = {"vocab_size": 300, "n_embd": 32, "n_layer": 1, "n_head": 2, "n_positions": 64}
    gpt2 = load_model("gpt2", random_weights=True, name="tinygpt2", config_overrides=overrides)
    engine = EngineArtifact(Precision.FP32, "onnxruntime", exported_onnx(gpt2, folder / "gpt2.onnx"), output_specs(gpt2))
    gpt2_served = ServedModel(
        name="tinygpt2", family=gpt2.family.name, tokenizer_dir=bert.tokenizer_dir, engine_inputs=gpt2.family.engine_inputs(),
        ensemble_outputs=gpt2.family.ensemble_outputs(gpt2), max_batch_size=4, max_seq_len=32, engines=[engine],
    )  # fmt: skip
    return [bert, gpt2_served]


def test_exported_graphs_pass_the_native_onnxruntime_backends_shape_checks(exported_models: list[ServedModel]) -> None:
    errors = []
    for model, options in itertools.product(exported_models, (ServingOptions(), ServingOptions(gpu=True))):
        for engine in model.engines:
            errors += native_onnx_shape_errors(config_for_engine(model, engine, options), engine.path)
    assert not errors, "\n".join(errors)
