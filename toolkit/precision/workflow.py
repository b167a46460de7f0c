"""The precision commands as library calls: load and export a model, make its data, write the report, the
policy and the result table into one folder (``build/precision/<name>/`` by default)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.precision.data import DataSet, random_dataset, text_dataset
from toolkit.precision.inspect import DIVERGE_COSINE, PrecisionReport, precision_report, write_report
from toolkit.precision.policy_file import PolicyBar, PrecisionPolicy, policy_nodes, write_policy
from toolkit.precision.search import LatencyOf, SearchResult, search_policy
from toolkit.precision.variants import VARIANTS_FILE, VariantLatency, VariantRow, variant_rows

if TYPE_CHECKING:
    import onnx

    from toolkit.models.loading import LoadedModel


@dataclass(frozen=True)
class ModelChoice:
    """What ``--model`` and its options ask for (the spellings of ``build_engines.py``)."""

    spec: str = "minilm"
    random_weights: bool = False
    layers: int | None = None
    outlier: float = 0.0
    name: str | None = None


@dataclass(frozen=True)
class DataChoice:
    """Which data: ``--texts`` (default the shipped corpus), shapes, and the random ids' range."""

    texts: Path | None = None
    batch_size: int = 4
    seq_len: int = 64
    batches: int = 2
    random_ids: tuple[int, int] | None = None


def exported_model(choice: ModelChoice, folder: Path) -> tuple[LoadedModel, onnx.ModelProto, Path]:
    """Load ``choice`` (with its outlier channel) and export its FP32 graph to ``folder/fp32.onnx``."""
    import onnx

    from toolkit.models.export import onnx_from_hf
    from toolkit.models.loading import load_model
    from toolkit.models.stress import add_outlier_channel

    overrides = {"num_hidden_layers": choice.layers, "n_layer": choice.layers} if choice.layers else {}
    model = load_model(choice.spec, choice.random_weights, choice.name, overrides)
    if choice.outlier:
        add_outlier_channel(model, choice.outlier)
    path = onnx_from_hf(model, folder / "fp32.onnx")
    return model, onnx.load(str(path)), path


def model_datasets(model: LoadedModel, data: DataChoice) -> tuple[DataSet, DataSet]:
    """Text and random-id data sets of one shape for ``model`` (sequence capped at its positions)."""
    seq = min(data.seq_len, model.max_positions)
    text = text_dataset(model.tokenizer, data.texts, data.batch_size, seq, data.batches)
    random = random_dataset(model.vocab_size, data.batch_size, seq, data.batches, id_range=data.random_ids)
    return text, random


def default_folder(choice: ModelChoice) -> Path:
    from toolkit.models.loading import short_name

    return Path("build") / "precision" / (choice.name or short_name(choice.spec))


def inspect_model(
    choice: ModelChoice, data: DataChoice, folder: Path | None = None, threshold: float = DIVERGE_COSINE, emulate: bool = True
) -> tuple[PrecisionReport, list[Path]]:
    """The precision report of ``choice`` on text and random ids, written to ``folder`` (JSON + PNG)."""
    folder = folder or default_folder(choice)
    model, graph, _ = exported_model(choice, folder)
    text, random = model_datasets(model, data)
    top1 = PolicyBar().top1_of(output.name for output in graph.graph.output)
    report = precision_report(
        graph, [text, random], threshold=threshold, model_name=model.name, top1_outputs=top1, emulate=emulate, progress=True
    )
    return report, write_report(report, folder)


def search_model(
    choice: ModelChoice,
    data: DataChoice,
    bar: PolicyBar,
    folder: Path | None = None,
    policy_out: Path | None = None,
    max_evaluations: int = 40,
    baseline: bool = True,
    emulate: bool = True,
) -> tuple[SearchResult, list[VariantRow], list[Path]]:
    """Report, search, and the result table for ``choice``; writes report, policy and ``variants.json``."""
    folder = folder or default_folder(choice)
    model, graph, path = exported_model(choice, folder)
    text, random = model_datasets(model, data)
    top1 = bar.top1_of(output.name for output in graph.graph.output)
    report = precision_report(graph, [text, random], model_name=model.name, top1_outputs=top1, emulate=emulate, progress=True)
    timers = gpu_timers(model, graph, path, text)
    result = search_policy(
        graph, text, bar, report, f"{model.name}-auto", model.name, max_evaluations, latency=timers[0], emulate=emulate, progress=True
    )
    rows = variant_rows(graph, text, bar, result.policy, result.costs, model.name, baseline, timers[1], emulate)
    written = write_report(report, folder)
    written.append(write_policy(result.policy, policy_out or folder / "policy.json"))
    table = folder / VARIANTS_FILE
    table.write_text(json.dumps([row.to_json() for row in rows], indent=1) + "\n")
    return result, rows, [*written, table]


def gpu_timers(model: LoadedModel, graph: onnx.ModelProto, path: Path, data: DataSet) -> tuple[LatencyOf | None, VariantLatency | None]:
    """Where ONNX Runtime has a GPU: latency of a candidate's fused graph (the build's GPU path) for the search
    and for the table's variants, timed on the data's first batch; (None, None) without a GPU."""
    from toolkit.precision.costs import gpu_available

    if not gpu_available():
        return None, None
    import onnx

    from toolkit.build import fused_graph
    from toolkit.names import Precision
    from toolkit.precision.costs import gpu_latency_ms
    from toolkit.precision.policy import fused_variant_from_fp32
    from toolkit.precision.policy_file import fused_graph_from_policy
    from toolkit.precision.probe import prepared_copy

    made = fused_graph(model, path, path.with_name("fused.onnx"))
    if made is None:  # a family ONNX Runtime has no fusions for: its GPU graph is the standard one
        return None, None
    fused, prepared, feeds = onnx.load(str(made[0])), prepared_copy(graph), data.batches[0]

    def policy_ms(nodes: frozenset[str]) -> float:
        policy = PrecisionPolicy("candidate", model.name, policy_nodes(prepared, nodes), PolicyBar())
        return gpu_latency_ms(fused_graph_from_policy(fused, policy, graph), feeds)

    def variant_ms(variant: str, nodes: frozenset[str]) -> float:
        if variant in ("fp16", "hybrid"):
            return gpu_latency_ms(fused_variant_from_fp32(fused, Precision(variant)), feeds)
        return policy_ms(nodes)

    latency: Callable[[frozenset[str]], float] = policy_ms
    return latency, variant_ms
