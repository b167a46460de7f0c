"""Named precision policies: which nodes of a model stay FP32, the bar they were found to meet, and on what data.

A policy file is JSON (``schema_version`` 1)::

    {"name": "outlier-auto", "model": "outlier", "nodes": [{"name": "/module/embeddings/Add_1", "op_type": "Add",
     "block": "embeddings", "outputs": ["..."]}, ...], "op_types": [], "groups": [...], "bar": {...},
     "data": [{"kind": "text", "file": "corpus.txt", "sha256": "...", "rows": 8, ...}], "graph": "<sha256>",
     "met": true, "message": "...", "trace": [...]}

``nodes`` name compute nodes of the FP32 export (after ``policy._prepared``, which only makes names unique);
``op_types`` keep every node of those types. :func:`graph_from_policy` turns a policy and the export into the
graph the build ships (the search evaluates exactly that graph). Fused graphs (ONNX Runtime's transformer
fusions merge and rename nodes) get the policy through :func:`fused_graph_from_policy`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import BadInputError
from toolkit.measurement.compare import Bar
from toolkit.precision.data import DataSource
from toolkit.precision.probe import NON_COMPUTE_OPS, block_names, prepared_copy

if TYPE_CHECKING:
    import onnx

POLICY_SCHEMA_VERSION = 1
NEXT_TOKEN_OUTPUTS: tuple[str, ...] = ("next_token_logits", "logits")
# Ops whose fused ONNX Runtime kernels already compute the softmax island in FP32 (hybrid relies on the same).
ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention"})
SOFTMAX_ISLAND_OPS = frozenset({"Softmax", "Div", "Mul", "Add", "Sub", "Where"})


@dataclass(frozen=True)
class PolicyBar:
    """What every judged output must meet against FP32: worst-row cosine, NaN/Inf rates, top-1 agreement of
    the next-token logits (GPT-2 families; outputs in ``top1_outputs`` that the graph has)."""

    min_cosine: float = 0.9998
    max_nan_rate: float = 0.0
    max_inf_rate: float = 0.0
    min_top1: float | None = 0.99
    top1_outputs: tuple[str, ...] = NEXT_TOKEN_OUTPUTS

    def __post_init__(self) -> None:
        if not -1.0 < self.min_cosine <= 1.0:
            raise BadInputError(f"--min-cosine {self.min_cosine} must lie in (-1, 1]; the default is 0.9998")
        for flag, value in (("max NaN rate", self.max_nan_rate), ("max Inf rate", self.max_inf_rate), ("--min-top1", self.min_top1)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise BadInputError(f"{flag} {value} must lie in [0, 1]")

    def bar(self) -> Bar:
        """The comparator's :class:`Bar` for these limits."""
        return Bar(min_cosine=self.min_cosine, max_nan_rate=self.max_nan_rate, max_inf_rate=self.max_inf_rate, min_top1=self.min_top1)

    def top1_of(self, outputs: Iterable[str]) -> frozenset[str]:
        """The outputs among ``outputs`` judged on top-1 agreement."""
        return frozenset(name for name in outputs if name in self.top1_outputs) if self.min_top1 is not None else frozenset()


@dataclass(frozen=True)
class PolicyNode:
    """A node kept in FP32, with what lets the policy follow it into a fused graph (its block, its outputs)."""

    name: str
    op_type: str
    block: str
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class PolicyGroup:
    """Nodes the search added or removed together (e.g. one LayerNorm and the residual adds feeding it)."""

    name: str
    reason: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class TraceStep:
    """One evaluated candidate of the search."""

    step: int
    action: str
    fp32_nodes: int
    met: bool
    worst_cosine: float | None
    nonfinite: int
    min_top1: float | None
    fp32_flop_share: float
    latency_ms: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class PrecisionPolicy:
    """A named set of FP32 nodes (and/or op types) of one model, and how it was found."""

    name: str
    model: str
    nodes: tuple[PolicyNode, ...]
    bar: PolicyBar
    data: tuple[DataSource, ...] = ()
    op_types: tuple[str, ...] = ()
    groups: tuple[PolicyGroup, ...] = ()
    graph: str = ""
    met: bool = True
    message: str = ""
    trace: tuple[TraceStep, ...] = field(default=(), repr=False)
    schema_version: int = POLICY_SCHEMA_VERSION

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["data"] = [source.to_json() for source in self.data]
        return record

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> PrecisionPolicy:
        values = dict(record)
        values["nodes"] = tuple(PolicyNode(**{**node, "outputs": tuple(node["outputs"])}) for node in record["nodes"])
        values["bar"] = PolicyBar(**{**record["bar"], "top1_outputs": tuple(record["bar"].get("top1_outputs", NEXT_TOKEN_OUTPUTS))})
        values["data"] = tuple(DataSource.from_json(source) for source in record.get("data", ()))
        values["op_types"] = tuple(record.get("op_types", ()))
        values["groups"] = tuple(PolicyGroup(**{**group, "nodes": tuple(group["nodes"])}) for group in record.get("groups", ()))
        values["trace"] = tuple(TraceStep(**step) for step in record.get("trace", ()))
        return cls(**values)


def write_policy(policy: PrecisionPolicy, path: Path) -> Path:
    """Write ``policy`` as JSON at ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(policy.to_json(), indent=1) + "\n")
    return path


def read_policy(path: Path) -> PrecisionPolicy:
    """The policy in ``path``; a missing, malformed or newer file is a BadInputError naming it."""
    if not path.is_file():
        raise BadInputError(f"--policy {path}: no such file; write one with `python -m toolkit.precision search --policy-out FILE`")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadInputError(
            f"--policy {path} is not a JSON policy file ({error}); write one with `python -m toolkit.precision search`"
        ) from None
    version = record.get("schema_version") if isinstance(record, dict) else None
    if version != POLICY_SCHEMA_VERSION:
        raise BadInputError(f"--policy {path} has schema_version {version!r}; this toolkit reads {POLICY_SCHEMA_VERSION}")
    try:
        return PrecisionPolicy.from_json(record)
    except (KeyError, TypeError) as error:
        raise BadInputError(f"--policy {path} lacks or misnames a field ({error}); compare with a file written by the search") from None


def graph_fingerprint(model: onnx.ModelProto) -> str:
    """sha256 of the prepared graph's node names and op types, in order (weights do not enter it)."""
    digest = hashlib.sha256()
    for node in prepared_copy(model).graph.node:
        digest.update(f"{node.name}\x00{node.op_type}\n".encode())
    return digest.hexdigest()


def check_policy(policy: PrecisionPolicy, model: onnx.ModelProto) -> None:
    """Raise one BadInputError listing every node and op type of ``policy`` that ``model`` lacks."""
    _check_prepared(policy, prepared_copy(model))


def _check_prepared(policy: PrecisionPolicy, prepared: onnx.ModelProto) -> None:
    names = {node.name for node in prepared.graph.node}
    ops = {node.op_type for node in prepared.graph.node}
    absent = [name for name in policy.node_names if name not in names]
    absent_ops = [op for op in policy.op_types if op not in ops]
    if absent or absent_ops:
        shown = ", ".join(absent[:20]) + (f" and {len(absent) - 20} more" if len(absent) > 20 else "")
        ops_text = f"; op types {absent_ops}" if absent_ops else ""
        raise BadInputError(
            f"policy '{policy.name}' names {len(absent)} nodes absent from the graph: {shown}{ops_text}; "
            f"the policy was searched on another export (graph {policy.graph[:12] or '?'}): search again on this model"
        )


def policy_nodes(model: onnx.ModelProto, names: Iterable[str], block_of: dict[str, str] | None = None) -> tuple[PolicyNode, ...]:
    """:class:`PolicyNode` records of ``names`` in ``model`` (prepared), in topological order."""
    chosen = set(names)
    blocks = block_of or block_names(model)
    return tuple(
        PolicyNode(node.name, node.op_type, blocks[node.name], tuple(node.output)) for node in model.graph.node if node.name in chosen
    )


def block_list(model: onnx.ModelProto, fp32_compute: Iterable[str]) -> set[str]:
    """The converter's node block list for FP32 compute nodes ``fp32_compute`` of ``model`` (prepared): those
    nodes, the value-moving nodes (Reshape, Transpose, ...) that read their outputs, and the Constants read
    only by FP32 nodes, so an FP32 value stays FP32 until an FP16 node reads it."""
    kept = set(fp32_compute)
    producer = {output: node.name for node in model.graph.node for output in node.output}
    for node in model.graph.node:
        if node.op_type in NON_COMPUTE_OPS and node.op_type not in ("Constant", "Cast") and node.input:
            if producer.get(node.input[0]) in kept:
                kept.add(node.name)
    readers: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name)
    for node in model.graph.node:
        if node.op_type == "Constant":
            users = readers.get(node.output[0], set())
            if users and users <= kept:
                kept.add(node.name)
    return kept


def graph_from_fp32_nodes(prepared: onnx.ModelProto, fp32_compute: Iterable[str]) -> onnx.ModelProto:
    """The mixed graph of ``prepared`` (left unmodified) with ``fp32_compute`` (and :func:`block_list`'s
    companions) in FP32, everything else FP16, FP32 inputs/outputs, no FP16 round trips between FP32 nodes."""
    import onnx as onnx_module

    from toolkit.precision.policy import bypass_fp16_round_trips, fp16_from_fp32

    copy = onnx_module.ModelProto()
    copy.CopyFrom(prepared)
    converted = fp16_from_fp32(copy, block_list(prepared, fp32_compute))
    bypass_fp16_round_trips(converted)
    return converted


def policy_fp32_nodes(policy: PrecisionPolicy, prepared: onnx.ModelProto) -> set[str]:
    """Compute nodes ``policy`` keeps in FP32 in ``prepared``: its named nodes and every node of its op types."""
    return set(policy.node_names) | {node.name for node in prepared.graph.node if node.op_type in policy.op_types}


def graph_from_policy(fp32_model: onnx.ModelProto, policy: PrecisionPolicy) -> onnx.ModelProto:
    """The graph the build ships for ``policy`` (the ``auto`` variant): raises BadInputError when the policy
    names nodes absent from ``fp32_model``. ``fp32_model`` is not modified."""
    prepared = prepared_copy(fp32_model)
    _check_prepared(policy, prepared)
    return graph_from_fp32_nodes(prepared, policy_fp32_nodes(policy, prepared))


def fused_fp32_nodes(policy: PrecisionPolicy, fused: onnx.ModelProto, fp32_model: onnx.ModelProto) -> tuple[set[str], list[str]]:
    """Nodes of ``fused`` (ONNX Runtime's fusions of ``fp32_model``) to keep FP32 for ``policy``, and the policy
    nodes it could not follow there.

    Fusions merge and rename nodes, so this approximates, rule by rule for each policy node: its name, where it
    survived; else the fused node writing its output tensor (a LayerNorm fused with its residual add keeps the
    LayerNorm's output name); else the fused LayerNorm form writing the output of a node that reads it (the
    residual add inside a SkipLayerNormalization); else, in the embeddings, the EmbedLayerNormalization (it
    holds the gathers, the embedding sum and the LayerNorm). Softmax-island nodes inside a fused Attention are
    covered by the kernel, which accumulates the softmax in FP32 (as the fused hybrid assumes). A fused kernel
    is all or nothing, so this keeps at least what the policy keeps, sometimes more; ``op_types`` also keep
    their fused forms (``policy.FUSED_FORMS``).
    """
    from toolkit.precision.policy import FUSED_FORMS

    layer_norms = frozenset(FUSED_FORMS["LayerNormalization"]) | {"LayerNormalization"}
    by_name = {node.name: node for node in fused.graph.node}
    writer = {output: node for node in fused.graph.node for output in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in prepared_copy(fp32_model).graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    ops = set(policy.op_types) | {fused_op for op in policy.op_types for fused_op in FUSED_FORMS.get(op, ())}
    kept = {node.name for node in fused.graph.node if node.op_type in ops}
    attention = any(node.op_type in ATTENTION_OPS for node in fused.graph.node)
    lost: list[str] = []
    for record in policy.nodes:
        found = _fused_home(record, by_name, writer, readers, layer_norms)
        if found:
            kept |= found
        elif not (attention and record.op_type in SOFTMAX_ISLAND_OPS):
            lost.append(record.name)
    return kept, lost


def _fused_home(
    record: PolicyNode,
    by_name: dict[str, onnx.NodeProto],
    writer: dict[str, onnx.NodeProto],
    readers: dict[str, list[onnx.NodeProto]],
    layer_norms: frozenset[str],
) -> set[str]:
    """The fused node(s) holding ``record`` by the rules of :func:`fused_fp32_nodes` (empty when none applies)."""
    if record.name in by_name:
        return {record.name}
    direct = {writer[output].name for output in record.outputs if output in writer}
    if direct:
        return direct
    via_reader = {
        writer[output].name
        for tensor in record.outputs
        for reader in readers.get(tensor, [])
        for output in reader.output
        if output in writer and writer[output].op_type in layer_norms
    }
    if via_reader:
        return via_reader
    if record.block == "embeddings":
        return {name for name, node in by_name.items() if node.op_type == "EmbedLayerNormalization"}
    return set()


def fused_graph_from_policy(fused: onnx.ModelProto, policy: PrecisionPolicy, fp32_model: onnx.ModelProto) -> onnx.ModelProto:
    """``policy`` applied to a fused FP32 graph (as ``policy.fused_variant_from_fp32`` makes the fused variants),
    with :func:`fused_fp32_nodes` as the converter's node block list (policy nodes it cannot follow run FP16:
    call it first to log them)."""
    import onnx as onnx_module
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    from toolkit.precision.policy import _prepared, _unshare_small_weights

    check_policy(policy, fp32_model)
    prepared = prepared_copy(fused)
    keep, _ = fused_fp32_nodes(policy, prepared, fp32_model)
    _unshare_small_weights(prepared)
    wrapped = OnnxModel(prepared)
    wrapped.convert_float_to_float16(keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST), node_block_list=sorted(keep))
    result: onnx_module.ModelProto = _prepared(wrapped.model)
    return result
