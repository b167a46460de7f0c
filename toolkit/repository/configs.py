"""Triton model configs built as ``ModelConfig`` protobuf messages, one function per model kind.

Each ``config_for_*`` turns a plain dict into a message with ``json_format.ParseDict``, so a
misspelled field or enum fails here, when generating, never when the server loads the model.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from toolkit.artifacts import EngineArtifact, ServedModel, TensorSpec
from toolkit.cli_values import batch_buckets
from toolkit.errors import BadInputError
from toolkit.names import LABEL, LABEL_ID, TEXT, TRUNCATED, Precision
from toolkit.repository.naming import engine_model, ensemble_model, labels_model, onehop_model, tokenizer_model
from toolkit.runtimes import DEFAULT_RUNTIME, get_runtime
from toolkit.runtimes.base import EngineServing

ModelConfig = model_config_pb2.ModelConfig
LABEL_SPEC = TensorSpec(LABEL, (1,), "TYPE_STRING")  # made by the labels model from the engine's label_id


@dataclass(frozen=True)
class ServingOptions:
    """Scheduling knobs shared by every generated model.

    ``max_queue_delay_us`` lets the dynamic batcher wait that long to group requests: 0 (default)
    batches only what queued while the model was busy, so a lone request never waits, once per model
    of the ensemble. ``dynamic_batching`` False leaves the batcher out of the tokenizer and engine models:
    one thread hand-off less per step for a lone request, no server-side batching under load (an H100
    host, ``serving_variants``: BERT-base FP16 b1 s128 c1 p50 1.74-1.92 ms against 2.12 ms, but 1054
    against 1504 requests/s at concurrency 4). ``intra_op_threads`` (written as the native backend's ``intra_op_thread_count``) = 0 keeps ONNX Runtime's default. ``cuda_graphs`` (GPU
    engines; default: on with ``gpu``) replays one captured CUDA graph per input shape; ``batch_buckets`` pads
    each engine batch up to a bucket so that few shapes (and graphs) cover every batch the server forms: ``pow2``
    (powers of two), a step N (powers of two up to N rows, then multiples of N: less padding, more graphs) or ``off``.
    ``tokenizer_threads`` (0: every core) bounds the threads each tokenizer or one-hop instance encodes on.
    ``seq_buckets`` are the lengths the tokenizer pads to (the smallest that fits the request's
    longest row), so requests of mixed lengths batch together and CUDA graphs see few shapes;
    default: powers of two from 16 with ``gpu``, none (pad to the longest row) on the CPU, where
    padding costs compute. ``max_seq_len`` always ends the list.
    """

    gpu: bool = False
    gpus: tuple[int, ...] | None = None  # the GPUs engine instances go on (None: every GPU Triton sees)
    engine_instances: int = 1
    tokenizer_instances: int = 1
    one_hop: bool = False
    max_queue_delay_us: int = 0
    dynamic_batching: bool = True
    intra_op_threads: int = 0
    cuda_graphs: bool | None = None
    seq_buckets: tuple[int, ...] | None = None
    batch_buckets: str = "pow2"
    tokenizer_threads: int = 0

    def __post_init__(self) -> None:
        if self.engine_instances < 1:
            raise BadInputError(f"engine_instances={self.engine_instances}: must be >= 1 (--engine-instances)")
        if self.gpus is not None and (not self.gpu or not self.gpus or min(self.gpus) < 0 or len(set(self.gpus)) != len(self.gpus)):
            raise BadInputError(f"gpus={self.gpus}: need distinct GPU indices >= 0, and GPU instances (--gpus 0,1 without --cpu)")
        if self.tokenizer_instances < 1:
            raise BadInputError(f"tokenizer_instances={self.tokenizer_instances}: must be >= 1 (--tokenizer-instances)")
        if self.max_queue_delay_us < 0:
            raise BadInputError(f"max_queue_delay_us={self.max_queue_delay_us}: must be >= 0 (--max-queue-delay-us)")
        if self.max_queue_delay_us and not self.dynamic_batching:
            raise BadInputError("a queue delay needs the dynamic batcher: drop --max-queue-delay-us or --no-dynamic-batching")
        if self.tokenizer_threads < 0:
            raise BadInputError(f"tokenizer_threads={self.tokenizer_threads}: must be >= 0, 0 means every core (--tokenizer-threads)")
        if self.intra_op_threads < 0:
            raise BadInputError(f"intra_op_threads={self.intra_op_threads}: must be >= 0, 0 means ORT's default")
        batch_buckets(self.batch_buckets)
        if self.cuda_graphs and not self.gpu:
            raise BadInputError("cuda_graphs=True needs gpu=True: CUDA graphs only exist on the CUDA provider (--gpu)")
        if self.seq_buckets is not None and (
            any(b < 1 for b in self.seq_buckets) or list(self.seq_buckets) != sorted(set(self.seq_buckets))
        ):
            raise BadInputError(f"seq_buckets={self.seq_buckets}: need increasing lengths >= 1 (--seq-buckets 32,128,512)")

    @property
    def uses_cuda_graphs(self) -> bool:
        return self.gpu if self.cuda_graphs is None else self.cuda_graphs

    def buckets_for(self, min_seq_len: int, max_seq_len: int) -> list[int]:
        """The padded lengths the tokenizer may emit for a model, in increasing order, ending at ``max_seq_len``."""
        if self.seq_buckets is None:
            wanted = [1 << n for n in range(4, max_seq_len.bit_length())] if self.gpu else []
        else:
            wanted = list(self.seq_buckets)
        return sorted({b for b in wanted if min_seq_len <= b < max_seq_len} | ({max_seq_len} if wanted else set()))


def _tensor(name: str, data_type: str, dims: list[int] | tuple[int, ...]) -> dict[str, Any]:
    return {"name": name, "data_type": data_type, "dims": list(dims)}


def _parameters(values: dict[str, object]) -> dict[str, Any]:
    return {key: {"string_value": str(value)} for key, value in values.items()}


def _message(spec: dict[str, Any]) -> model_config_pb2.ModelConfig:
    """ParseDict rejects unknown fields and enum values: the whole point of building messages."""
    return json_format.ParseDict(spec, ModelConfig())


def _batching(model: ServedModel, options: ServingOptions) -> dict[str, Any]:
    if not options.dynamic_batching:
        return {"max_batch_size": model.max_batch_size}
    return {
        "max_batch_size": model.max_batch_size,
        "dynamic_batching": {"max_queue_delay_microseconds": options.max_queue_delay_us},
    }


def config_for_tokenizer(model: ServedModel, options: ServingOptions = ServingOptions()) -> model_config_pb2.ModelConfig:
    """Python-backend model: TEXT -> token tensors of the family's engine plus a ``truncated`` flag.

    Rows are padded to the request's longest row, and at least to ``model.min_seq_len``, then up to
    the next of ``options.buckets_for(...)`` (parameter ``seq_buckets``) when there are buckets.
    """
    outputs = [_tensor(name, "TYPE_INT64", [-1]) for name in model.engine_inputs]
    return _message(
        {
            "name": tokenizer_model(model.name),
            "backend": "python",
            **_batching(model, options),
            "input": [_tensor(TEXT, "TYPE_STRING", [1])],
            "output": [*outputs, _tensor(TRUNCATED, "TYPE_BOOL", [1])],
            # One set of tokenizer instances per GPU the engines run on: each GPU's engines need their texts tokenized.
            "instance_group": [{"kind": "KIND_CPU", "count": options.tokenizer_instances * len(options.gpus or (0,))}],
            "parameters": _parameters(_tokenizer_parameters(model, options)),
        }
    )


def _tokenizer_parameters(model: ServedModel, options: ServingOptions) -> dict[str, object]:
    """What ``text_encoder.TextEncoder.from_parameters`` reads: truncation, padding, buckets, pad id, lowercasing."""
    return {
        "max_seq_len": model.max_seq_len,
        "min_seq_len": model.min_seq_len,
        "seq_buckets": ",".join(map(str, options.buckets_for(model.min_seq_len, model.max_seq_len))),
        "pad_id": model.pad_id,
        "lowercase": int(model.lowercase),
        "family": model.family,
        **({"tokenizer_threads": options.tokenizer_threads} if options.tokenizer_threads else {}),
    }


def config_for_onehop(model: ServedModel, engine: EngineArtifact, options: ServingOptions = ServingOptions()) -> model_config_pb2.ModelConfig:
    """One Python model doing the text ensemble's work (tokenizer, engine, label names) in one hop: TEXT in, what the
    ensemble returns out. Its engine parameters are the runtime's own (threads, CUDA graphs)."""
    runtime = get_runtime(engine.runtime)
    if runtime.one_hop_backend() is None:
        raise BadInputError(f"runtime {runtime.name} has no one-hop backend: drop --one-hop or build {DEFAULT_RUNTIME} engines")
    returned = _ensemble_outputs(model, engine.outputs, f"engine {engine.path}")
    engine_fields = runtime.config_fields(_engine_serving(model, options))
    parameters = {**_tokenizer_parameters(model, options), **{k: v["string_value"] for k, v in engine_fields.get("parameters", {}).items()}}
    if model.labels:
        parameters["id2label"] = json.dumps({str(k): v for k, v in sorted(model.labels.items())})
    return _message(
        {
            "name": onehop_model(model.name, engine.precision),
            "backend": "python",
            **_batching(model, options),
            "input": [_tensor(TEXT, "TYPE_STRING", [1])],
            "output": [*(_tensor(spec.name, spec.data_type, spec.dims) for spec in returned), _tensor(TRUNCATED, "TYPE_BOOL", [1])],
            "instance_group": engine_fields["instance_group"],
            "parameters": _parameters(parameters),
        }
    )


def config_for_labels(model: ServedModel, options: ServingOptions = ServingOptions()) -> model_config_pb2.ModelConfig:
    """Python-backend model of a classifier: ``label_id`` (the engine's argmax) -> ``label`` (its id2label name)."""
    if not model.labels:
        raise BadInputError(f"model {model.name!r} has no label names: only a classification head gets a labels model")
    return _message(
        {
            "name": labels_model(model.name),
            "backend": "python",
            **_batching(model, options),
            "input": [_tensor(LABEL_ID, "TYPE_INT64", [1])],
            "output": [_tensor(LABEL_SPEC.name, LABEL_SPEC.data_type, LABEL_SPEC.dims)],
            "instance_group": [{"kind": "KIND_CPU", "count": 1}],
            "parameters": _parameters({"id2label": json.dumps({str(k): v for k, v in sorted(model.labels.items())})}),
        }
    )


def _ensemble_outputs(model: ServedModel, specs: Iterable[TensorSpec], where: str) -> list[TensorSpec]:
    """The specs of what ``model``'s text ensemble returns, found among ``specs`` (the label comes from the labels
    model); BadInputError if any is missing."""
    by_name = {spec.name: spec for spec in specs}
    if model.labels:
        by_name[LABEL] = LABEL_SPEC
    missing = [name for name in model.ensemble_outputs if name not in by_name]
    if missing:
        raise BadInputError(
            f"{where} output {list(by_name)}: a {model.family} engine "
            f"must also output {missing} for the text ensemble; re-export the model (build_engines.py)"
        )
    return [by_name[name] for name in model.ensemble_outputs]


def _engine_serving(model: ServedModel, options: ServingOptions) -> EngineServing:
    return EngineServing(
        gpu=options.gpu,
        gpus=options.gpus,
        instances=options.engine_instances,
        intra_op_threads=options.intra_op_threads,
        cuda_graphs=options.uses_cuda_graphs,
        batch_buckets=options.batch_buckets,
        inputs=model.engine_inputs,
        buckets=tuple(options.buckets_for(model.min_seq_len, model.max_seq_len)),
        max_batch_size=model.max_batch_size,
    )


def config_for_engine(
    model: ServedModel, engine: EngineArtifact, options: ServingOptions = ServingOptions()
) -> model_config_pb2.ModelConfig:
    """One engine of any registered runtime: token tensors in, the engine's outputs out."""
    runtime = get_runtime(engine.runtime)
    _ensemble_outputs(model, engine.outputs, f"engine {engine.path}")
    return _message(
        {
            "name": engine_model(model.name, engine.precision, runtime.name),
            "platform": runtime.platform,
            "default_model_filename": runtime.model_file,
            **_batching(model, options),
            "input": [_tensor(name, "TYPE_INT64", [-1]) for name in model.engine_inputs],
            "output": [_tensor(spec.name, spec.data_type, spec.dims) for spec in engine.outputs],
            **runtime.config_fields(_engine_serving(model, options)),
        }
    )


def _step(model_name: str, inputs: dict[str, str], outputs: dict[str, str]) -> dict[str, Any]:
    """One ensemble step; maps are {model tensor: ensemble tensor} and we keep both names equal."""
    return {"model_name": model_name, "model_version": -1, "input_map": inputs, "output_map": outputs}


def config_for_ensemble(model: ServedModel, precision: Precision | str, runtime: str = DEFAULT_RUNTIME) -> model_config_pb2.ModelConfig:
    """Text-in ensemble: tokenizer -> engine of (precision, runtime), which computes what the ensemble returns
    (-> the labels model, for a classifier's label names).

    An encoder returns ``sentence_embedding`` (and a classifier's ``logits``, ``probabilities``, ``label``), a
    decoder ``next_token_logits`` and ``next_token_id``; per-token states and full logits stay with the engine
    models (and, unrequested, on the GPU).
    """
    token_tensors = {name: name for name in model.engine_inputs}
    returned = _ensemble_outputs(model, (spec for engine in model.engines for spec in engine.outputs), f"model {model.name}'s engines")
    from_engine = {spec.name: spec.name for spec in returned if spec.name != LABEL}
    steps = [_step(tokenizer_model(model.name), {TEXT: TEXT}, {**token_tensors, TRUNCATED: TRUNCATED})]
    if model.labels:
        steps.append(_step(engine_model(model.name, precision, runtime), token_tensors, {**from_engine, LABEL_ID: LABEL_ID}))
        steps.append(_step(labels_model(model.name), {LABEL_ID: LABEL_ID}, {LABEL: LABEL}))
    else:
        steps.append(_step(engine_model(model.name, precision, runtime), token_tensors, from_engine))
    return _message(
        {
            "name": ensemble_model(model.name, precision, runtime),
            "platform": "ensemble",
            "max_batch_size": model.max_batch_size,
            "input": [_tensor(TEXT, "TYPE_STRING", [1])],
            "output": [*(_tensor(spec.name, spec.data_type, spec.dims) for spec in returned), _tensor(TRUNCATED, "TYPE_BOOL", [1])],
            "ensemble_scheduling": {"step": steps},
        }
    )


def config_text(config: model_config_pb2.ModelConfig) -> str:
    """The ``config.pbtxt`` text of a message."""
    return text_format.MessageToString(config)


def config_from_text(text: str) -> model_config_pb2.ModelConfig:
    """Parse ``config.pbtxt`` text back into a message; raises ``text_format.ParseError`` on bad text."""
    return text_format.Parse(text, ModelConfig())


__all__ = [
    "ServingOptions",
    "config_for_engine",
    "config_for_ensemble",
    "config_for_labels",
    "config_for_onehop",
    "config_for_tokenizer",
    "config_from_text",
    "config_text",
]
