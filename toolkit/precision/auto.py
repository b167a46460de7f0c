"""The ``auto`` precision in the build: a policy (read from ``--policy FILE`` or searched on the model's
text at build time) turned into the graphs the engines are built from.

The standard graph is exactly the one the search evaluated (``policy_file.graph_from_policy``); the fused
graph follows the policy through ONNX Runtime's fusions (``policy_file.fused_graph_from_policy``), and the
policy nodes it could not follow there are said, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.precision.policy_file import PolicyBar, PrecisionPolicy, graph_fingerprint, read_policy

if TYPE_CHECKING:
    import onnx

    from toolkit.models.loading import LoadedModel

Log = Callable[[str], None]
BUILD_SEARCH_EVALUATIONS = 24  # a build's search: fewer candidates than `toolkit.precision search` tries


@dataclass(frozen=True)
class AutoGraphs:
    """The ``auto`` variant's graphs and what the manifest records of its policy."""

    standard: onnx.ModelProto
    fused: onnx.ModelProto | None
    record: dict[str, Any]


def build_policy(model: LoadedModel, exported: onnx.ModelProto, policy_file: str | None, log: Log) -> PrecisionPolicy:
    """The policy of the ``auto`` variant: ``policy_file`` when given (its nodes must exist in ``exported``),
    else a search on the shipped corpus against the default bar (said in the log, with its outcome)."""
    if policy_file:
        policy = read_policy(Path(policy_file))
        log(f"{model.name}: auto precision from policy '{policy.name}' ({len(policy.nodes)} FP32 nodes, {policy_file})")
        return policy
    from toolkit.precision.data import text_dataset
    from toolkit.precision.search import search_policy

    seq = min(64, model.max_positions)
    data = text_dataset(model.tokenizer, None, 4, seq, 2)
    log(f"{model.name}: no --policy given: searching the auto policy on the shipped corpus (bar {PolicyBar().min_cosine} cosine)")
    result = search_policy(exported, data, PolicyBar(), name=f"{model.name}-auto", model_name=model.name,
                           max_evaluations=BUILD_SEARCH_EVALUATIONS, progress=True)
    verdict = "meets" if result.policy.met else "does NOT meet"
    log(f"{model.name}: auto policy keeps {len(result.policy.nodes)} nodes FP32 and {verdict} the bar: {result.policy.message}")
    return result.policy


def auto_graphs(policy: PrecisionPolicy, exported: onnx.ModelProto, fused: onnx.ModelProto | None, log: Log) -> AutoGraphs:
    """``policy`` applied to the export (and to its fused graph, when the build fuses); raises BadInputError
    listing the policy's nodes the export lacks."""
    from toolkit.precision.policy_file import fused_fp32_nodes, fused_graph_from_policy, graph_from_policy
    from toolkit.precision.probe import prepared_copy

    standard = graph_from_policy(exported, policy)
    lost: list[str] = []
    fused_graph = None
    if fused is not None:
        _, lost = fused_fp32_nodes(policy, prepared_copy(fused), exported)
        if lost:
            log(f"{policy.model}: {len(lost)} policy nodes have no home in the fused graph and run FP16 there: {', '.join(lost[:8])}")
        fused_graph = fused_graph_from_policy(fused, policy, exported)
    record = policy_record(policy, graph_fingerprint(exported), lost)
    return AutoGraphs(standard, fused_graph, record)


def policy_record(policy: PrecisionPolicy, export_graph: str, lost_in_fused: list[str]) -> dict[str, Any]:
    """What the manifest keeps of the ``auto`` policy: all but the search trace, plus whether it was searched
    on this very export and which nodes the fused graph could not keep."""
    record = policy.to_json()
    record.pop("trace", None)
    record["searched_on_this_export"] = policy.graph == export_graph
    record["lost_in_fused"] = lost_in_fused
    return record
