"""The policy search: the smallest set of FP32 nodes whose mixed graph meets a bar on real text.

1. Full FP16 is tried first: when it meets the bar the policy is empty.
2. All compute nodes in FP32 is tried next: when even that fails the bar, no policy can meet it, and the search
   stops there with the better of the two and a message saying so (no endless search).
3. Seeds come from the precision report: the nodes where FP16 breaks (FP32 values beyond 65504; the first
   node of each non-finite or diverging path, i.e. whose inputs are still fine), each grown into an island:
   forward through readers while values stay beyond FP16's range, up to the node that brings them back (a
   LayerNorm), and back through the element-wise producers feeding them (as the hybrid policy walks).
4. Grow: when the seeds do not meet the bar, the remaining groups are added in order of risk (the islands
   of Softmax/LayerNorm/ReduceMean/ReduceSum first, then each block's remaining nodes), 1, 2, 4, ... at a time.
5. Prune: each group is dropped when the bar still holds without it (most FLOPs first), then each node of
   the groups left (``refine``).

Every candidate is the graph :func:`policy_file.graph_from_fp32_nodes` makes, so the build ships what was
judged. Evaluations are bounded (``max_evaluations``); where a GPU is present, each candidate that meets the
bar is timed as a fused graph and the fastest is chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.precision.costs import NodeCosts, node_costs
from toolkit.precision.data import DataSet
from toolkit.precision.evaluate import Judge, Measurement
from toolkit.precision.inspect import PrecisionReport, TensorStats, precision_report
from toolkit.precision.policy import DEFAULT_KEEP_FP32, fp32_island
from toolkit.precision.policy_file import (
    PolicyBar,
    PolicyGroup,
    PrecisionPolicy,
    TraceStep,
    graph_fingerprint,
    graph_from_fp32_nodes,
    policy_nodes,
)
from toolkit.precision.probe import compute_node_names, prepared_copy, tensor_types

if TYPE_CHECKING:
    import onnx

MAX_EVALUATIONS = 40
# Latency of a candidate (its FP32 compute nodes) on the GPU, in ms; None where no GPU is present.
LatencyOf = Callable[[frozenset[str]], float]


@dataclass(frozen=True)
class SearchResult:
    """The policy found, its graph (what the build ships), the report it started from and the node costs."""

    policy: PrecisionPolicy
    graph: onnx.ModelProto
    report: PrecisionReport
    costs: NodeCosts


@dataclass(frozen=True)
class _Tried:
    nodes: frozenset[str]
    measurement: Measurement
    latency_ms: float | None


class _Evaluations:
    """Candidates judged so far, the trace, and the budget."""

    def __init__(
        self, prepared: onnx.ModelProto, judge: Judge, costs: NodeCosts, budget: int, latency: LatencyOf | None, progress: object
    ) -> None:
        self.prepared, self.judge, self.costs, self.budget, self.latency, self.progress = prepared, judge, costs, budget, latency, progress
        self.tried: dict[frozenset[str], _Tried] = {}
        self.trace: list[TraceStep] = []

    @property
    def exhausted(self) -> bool:
        return len(self.tried) >= self.budget

    def met(self, nodes: set[str] | frozenset[str], action: str) -> bool:
        """Judge the graph keeping ``nodes`` FP32 (cached); False once the budget is spent."""
        key = frozenset(nodes)
        if key not in self.tried:
            if self.exhausted:
                return False
            measurement = self.judge.measure(graph_from_fp32_nodes(self.prepared, key))
            latency = self.latency(key) if self.latency is not None and measurement.met else None
            self.tried[key] = _Tried(key, measurement, latency)
            self.trace.append(self._step(self.tried[key], action))
            if hasattr(self.progress, "update"):
                self.progress.update()
        return self.tried[key].measurement.met

    def _step(self, tried: _Tried, action: str) -> TraceStep:
        m = tried.measurement
        return TraceStep(
            step=len(self.trace) + 1,
            action=action,
            fp32_nodes=len(tried.nodes),
            met=m.met,
            worst_cosine=m.worst_cosine,
            nonfinite=m.nonfinite,
            min_top1=m.min_top1,
            fp32_flop_share=self.costs.flop_share(tried.nodes),
            latency_ms=tried.latency_ms,
            detail="; ".join(m.failures[:2]),
        )

    def best(self) -> _Tried:
        """The passing candidate of least latency (with a GPU) or fewest FLOPs and nodes; else the closest miss."""
        passing = [t for t in self.tried.values() if t.measurement.met]
        if passing:
            return min(passing, key=lambda t: (t.latency_ms or 0.0, self.costs.flop_share(t.nodes), len(t.nodes)))
        return min(self.tried.values(), key=lambda t: (len(t.measurement.failures), -(t.measurement.worst_cosine or -2.0)))


def search_policy(
    fp32: onnx.ModelProto,
    data: DataSet,
    bar: PolicyBar | None = None,
    report: PrecisionReport | None = None,
    name: str = "auto",
    model_name: str = "",
    max_evaluations: int = MAX_EVALUATIONS,
    refine: bool = True,
    latency: LatencyOf | None = None,
    emulate: bool = True,
    progress: bool = False,
) -> SearchResult:
    """Search the cheapest FP32 node set of ``fp32`` whose graph meets ``bar`` on ``data`` (see module doc).

    ``report`` (a precision report of the FP16 graph with ``data.kind`` among its runs) is made when absent.
    Returns the policy (``met`` False, with the reason in ``message``, when no candidate met the bar).
    """
    bar = bar or PolicyBar()
    prepared = prepared_copy(fp32)
    judge = Judge(prepared, data, bar, emulate)
    if report is None or data.kind not in report.runs:
        report = precision_report(prepared, [data], model_name=model_name, top1_outputs=bar.top1_of(judge.outputs), emulate=emulate)
    costs = node_costs(prepared, data.batches[0])
    groups = candidate_groups(prepared, report, data.kind)
    with _progress(progress, max_evaluations) as bar_:
        runs = _Evaluations(prepared, judge, costs, max_evaluations, latency, bar_)
        chosen, message = _search(runs, groups, costs, refine)
    best = runs.best() if latency is not None and runs.tried[chosen].measurement.met else runs.tried[chosen]
    policy = PrecisionPolicy(
        name=name,
        model=model_name,
        nodes=policy_nodes(prepared, best.nodes),
        bar=bar,
        data=(data.source,),
        groups=tuple(
            PolicyGroup(g.name, g.reason, tuple(n for n in g.nodes if n in best.nodes)) for g in groups if set(g.nodes) & best.nodes
        ),
        graph=graph_fingerprint(prepared),
        met=best.measurement.met,
        message=message,
        trace=tuple(runs.trace),
    )
    return SearchResult(policy, graph_from_fp32_nodes(prepared, best.nodes), report, costs)


def _progress(show: bool, total: int) -> AbstractContextManager[Any]:
    from contextlib import nullcontext

    if not show:
        return nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc="search", unit="candidate", leave=False)


def _search(runs: _Evaluations, groups: list[PolicyGroup], costs: NodeCosts, refine: bool) -> tuple[frozenset[str], str]:
    """The search's steps; returns the chosen node set and what happened."""
    everything = frozenset(n for g in groups for n in g.nodes)
    if runs.met(frozenset(), "fp16"):
        return frozenset(), "full FP16 meets the bar: no node needs FP32"
    if not runs.met(everything, "all-fp32"):
        closest = runs.best()
        return closest.nodes, (
            f"no policy meets the bar: even all {len(everything)} compute nodes in FP32 fail it "
            f"({runs.tried[everything].measurement.summary()}); returning the closest candidate "
            f"({len(closest.nodes)} FP32 nodes): loosen the bar (--min-cosine, --min-top1) or check the model in FP32"
        )
    chosen = _grow(runs, groups, everything)
    chosen = _prune(runs, chosen, groups, costs, refine)
    tail = f"; the budget of {runs.budget} evaluations ran out before pruning ended" if runs.exhausted else ""
    return chosen, f"{len(chosen)} of {len(everything)} compute nodes in FP32 meet the bar after {len(runs.tried)} evaluations{tail}"


def _grow(runs: _Evaluations, groups: list[PolicyGroup], everything: frozenset[str]) -> frozenset[str]:
    """Seeds (report groups), then further groups 1, 2, 4, ... at a time until the bar holds."""
    seeds = [g for g in groups if g.reason.startswith("report")]
    rest = [g for g in groups if not g.reason.startswith("report")]
    chosen = frozenset(n for g in seeds for n in g.nodes)
    if seeds and runs.met(chosen, "seed"):
        return chosen
    step = 1
    while rest:
        added, rest = rest[:step], rest[step:]
        chosen = chosen | {n for g in added for n in g.nodes}
        if runs.met(chosen, f"grow +{len(added)} groups"):
            return chosen
        if runs.exhausted:
            break
        step *= 2
    return everything


def _prune(runs: _Evaluations, chosen: frozenset[str], groups: list[PolicyGroup], costs: NodeCosts, refine: bool) -> frozenset[str]:
    """Drop each group, then each node, whose removal keeps the bar met (most FLOPs first)."""
    present = [g for g in groups if set(g.nodes) & chosen]
    for group in sorted(present, key=lambda g: -sum(costs.flops.get(n, 0.0) for n in g.nodes)):
        candidate = chosen - set(group.nodes)
        if candidate != chosen and runs.met(candidate, f"prune {group.name}"):
            chosen = candidate
    if refine:
        for node in sorted(chosen, key=lambda n: (-costs.flops.get(n, 0.0), n)):
            if len(chosen) > 1 and runs.met(chosen - {node}, f"refine {node}"):
                chosen = chosen - {node}
    return chosen


def candidate_groups(prepared: onnx.ModelProto, report: PrecisionReport, kind: str = "text") -> list[PolicyGroup]:
    """Groups of compute nodes in the order the search adds them: the report's islands (where FP16 breaks), the
    islands of the hybrid's kept op types by risk, then each block's remaining nodes. Each node is in one group."""
    types = tensor_types(prepared)
    compute = compute_node_names(prepared, types)
    allowed = set(compute)
    stats = {node.name: node for node in report.runs[kind].nodes}
    groups = _report_groups(prepared, report, kind, allowed)
    anchors = [node.name for node in prepared.graph.node if node.op_type in DEFAULT_KEEP_FP32 and node.name in allowed]
    risk = sorted(anchors, key=lambda a: _risk(stats.get(a)))
    groups += [
        PolicyGroup(f"island {anchor}", "hybrid op island", tuple(sorted(fp32_island(prepared, [anchor]) & allowed))) for anchor in risk
    ]
    blocks = {node.name: node.block for node in report.runs[kind].nodes}
    for block in dict.fromkeys(blocks[n] for n in compute if n in blocks):
        groups.append(PolicyGroup(f"block {block}", "block rest", tuple(n for n in compute if blocks.get(n) == block)))
    return _disjoint(groups, compute)


def _risk(node: object) -> tuple[float, float]:
    stats: TensorStats | None = getattr(node, "stats", None)
    if stats is None:
        return (math.inf, 0.0)
    error = 1.0 if math.isnan(stats.cosine_min) or stats.nonfinite else 1.0 - stats.cosine_min
    return (stats.headroom, -error)


def _disjoint(groups: Sequence[PolicyGroup], order: Sequence[str]) -> list[PolicyGroup]:
    """Each node in the first group that names it; groups in topological node order; empty groups dropped."""
    position = {name: index for index, name in enumerate(order)}
    seen: set[str] = set()
    result = []
    for group in groups:
        nodes = tuple(sorted((n for n in set(group.nodes) - seen if n in position), key=position.__getitem__))
        seen |= set(nodes)
        if nodes:
            result.append(PolicyGroup(group.name, group.reason, nodes))
    return result


def _report_groups(prepared: onnx.ModelProto, report: PrecisionReport, kind: str, allowed: set[str]) -> list[PolicyGroup]:
    """One island per node where FP16 breaks on ``kind`` data (see :func:`breaking_nodes`), merged when they overlap."""
    run = report.runs[kind]
    stats = {node.name: node.stats for node in run.nodes}
    islands: list[tuple[str, set[str]]] = []
    for name, reason in breaking_nodes(prepared, report, kind):
        island = _overflow_island(prepared, name, stats) & allowed
        overlapping = [entry for entry in islands if entry[1] & island]
        for entry in overlapping:
            island |= entry[1]
            islands.remove(entry)
        islands.append((f"{reason} at {name}", island))
    return [PolicyGroup(label, "report: " + label.split(" at ")[0], tuple(sorted(nodes))) for label, nodes in islands if nodes]


def breaking_nodes(prepared: onnx.ModelProto, report: PrecisionReport, kind: str = "text") -> list[tuple[str, str]]:
    """Nodes where FP16 breaks on ``kind`` data, with why: FP32 values beyond FP16's range (``overflow``), or
    outputs that go non-finite or diverge while every input they read is still fine (where a bad path starts)."""
    run = report.runs[kind]
    stats = {node.name: node.stats for node in run.nodes}
    tensor_of = {node.tensor: node.name for node in run.nodes}
    inputs_of = {node.name: list(node.input) for node in prepared.graph.node}

    def bad(s: TensorStats) -> bool:
        return bool(s.nonfinite and not s.reference_nonfinite) or (not math.isnan(s.cosine_min) and s.cosine_min < report.threshold)

    found = []
    for node in run.nodes:
        s = node.stats
        if s.headroom < 1.0:
            found.append((node.name, "overflow"))
            continue
        inputs = [stats[tensor_of[t]] for t in inputs_of[node.name] if t in tensor_of]
        if bad(s) and not any(bad(i) for i in inputs):
            found.append((node.name, "non-finite" if s.nonfinite else "diverged"))
    return found


def _overflow_island(prepared: onnx.ModelProto, start: str, stats: dict[str, TensorStats]) -> set[str]:
    """``start``, its readers while values stay beyond FP16 (and the reader that brings them back), and the
    element-wise producers feeding all of them."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in prepared.graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    by_name = {node.name: node for node in prepared.graph.node}
    island, stack = set(), [start]
    while stack:
        name = stack.pop()
        if name in island:
            continue
        island.add(name)
        node_stats = stats.get(name)
        if node_stats is not None and node_stats.headroom < 1.0:
            stack += [reader.name for output in by_name[name].output for reader in readers.get(output, [])]
    return fp32_island(prepared, island)
