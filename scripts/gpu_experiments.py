"""Measurements on the GPU machine that inform serving choices; run by ``scripts/gpu_pipeline.sh experiments``.

Not part of the grid: each answers one question with numbers from this machine, and lands in
``<out>/<gpu>/experiments_<model>.json`` (a ``perf.records.Experiments``; also printed; the report plots the
kernel profiles):

- ``attention_kernels``: ONNX Runtime's CUDA attention kernel (EP option ``sdpa_kernel``, 0 = its own
  choice) for the BERT-base FP16 engine at a few shapes, each output compared with the default kernel's.
- ``request_path``: where one served request's time goes in ``DeviceRunner.run`` at batch 1, length 128:
  input copies, the graph replay, the device sync, the output copy.
- ``tokenizer``: the Python tokenizer's time for one 128-token text on this host's CPU, with and without
  BertNormalizer (the served model skips it on plain ASCII).
- ``cpu_threads``: the CPU FP32 baseline with ONNX Runtime's default threads and with every logical core.
- ``kernel_profile``: the GPU kernels of one FP16 run at batch 1 length 128 (with and without its CUDA graph)
  and at batch 32 length 512 (CUPTI through torch.profiler, which records every kernel of the process, ONNX
  Runtime's too): how many, how long, and how much of a run is spent between kernels.
- ``engine_variants``: the same FP16 engine changed in one way each (vocabulary projection unpadded, one output
  only, INT32 inputs), each timed in a process of its own against the engine as built, each output compared with
  the built one's.
- ``timing_conditions``: the FP16 replay at b1 s128 as the process around it changes (another session loaded,
  another session run): why engines are timed in processes of their own.
- ``serving_variants``: the text ensemble served as built, without the dynamic batcher and with one ONNX Runtime
  thread, by one Triton server: p50 at c1, throughput at c4, each model's server time.

``--experiments`` picks some; the record holds those that ran.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tritonclient.grpc import model_config_pb2

from perf.analyzer import PerfAnalyzerArgs, run_perf_analyzer
from perf.engine_grid import GridPlan
from perf.inputs import batch_arrays, perf_analyzer_data, text_samples, write_perf_analyzer_data
from perf.records import Experiments
from perf.server_stats import StatisticsReader
from toolkit.cli import CONTEXT_SETTINGS, list_option
from toolkit.cli_values import comma_items
from toolkit.environment import code_version, device_info
from toolkit.graphs.causal_attention import live_nodes
from toolkit.graphs.vocab_padding import unpad_vocab_projection
from toolkit.measurement.compare import compare_arrays
from toolkit.measurement.timing import TimingBudget, TimingJob, time_callable, time_for
from toolkit.models.tokenizers import load_tokenizer_file
from toolkit.names import DEFAULT_PRECISIONS, TEXT
from toolkit.repository.configs import config_from_text, config_text
from toolkit.repository.lookup import engine_file, engine_input_names, find_tokenizer, require_engine_file
from toolkit.repository.naming import engine_model, ensemble_model, tokenizer_model
from toolkit.runtimes import DEFAULT_RUNTIME, get_runtime
from toolkit.runtimes.onnxruntime import session_for
from toolkit.runtimes.ort_device import NUMPY_OF_ORT, DeviceRunner, cuda_session
from toolkit.serving.server import running_server

# ONNX Runtime's AttentionBackend bits (attention_kernel_options.h); 0 lets it choose.
KERNELS = {0: "default", 1: "flash", 2: "efficient", 4: "trt_fused", 8: "cudnn_flash", 16: "math", 32: "trt_flash"}
SHAPES = ((1, 128), (8, 128), (32, 512))
GRAPH_TOKENS = 4096  # as the grid: CUDA graphs up to this many tokens
PROFILE_SHAPES = ((1, 128, 50), (32, 512, 10))  # batch, length, profiled runs
VARIANT_BUDGET = TimingBudget(0.3, 10, 200, 3)  # time_for per variant and shape


def compare_variants(
    variants: list[tuple[str, Path, dict[str, str]]], tokenizer: Path, names: list[str], shapes: Iterable[tuple[int, int]]
) -> list[dict[str, Any]]:
    """Time each (label, engine file, CUDA EP options) at ``shapes`` through the served runner; the first
    variant is the reference whose same-named output every later one is compared with."""
    rows: list[dict[str, Any]] = []
    reference: dict[tuple[int, int], dict[str, np.ndarray]] = {}
    for label, path, options in variants:
        rows += _variant_rows(label, path, options, tokenizer, names, shapes, reference)
    return rows


def _variant_rows(
    label: str,
    path: Path,
    options: dict[str, str],
    tokenizer: Path,
    names: list[str],
    shapes: Iterable[tuple[int, int]],
    reference: dict[tuple[int, int], dict[str, np.ndarray]],
) -> list[dict[str, Any]]:
    """One variant's rows, timed in a process of its own (``toolkit.measurement.isolated``: a variant timed after
    another in one process would pay for sharing it); fills ``reference`` when it is empty (the first variant)."""
    first = not reference
    shapes = tuple(shapes)
    feeds_by_shape = {(batch, seq): batch_arrays(tokenizer, names, batch, seq) for batch, seq in shapes}
    job = TimingJob(path, feeds_by_shape, "cuda", VARIANT_BUDGET, GRAPH_TOKENS, options)
    timings = get_runtime(DEFAULT_RUNTIME).time_job(job)
    try:
        session, _ = cuda_session(str(path), graphs=False, provider_options=options)
    except Exception as error:
        return [{"variant": label, "status": f"session failed: {str(error).splitlines()[0][:160]}"}]
    runner = DeviceRunner(session, max_graphs=0)
    input_types = {i.name: NUMPY_OF_ORT[i.type] for i in session.get_inputs()}  # variants may take INT32
    rows = []
    for batch, seq in shapes:
        row: dict[str, Any] = {"variant": label, "batch_size": batch, "seq_len": seq, "options": options}
        timing = timings[(batch, seq)]
        try:
            if timing["status"] != "ok":
                raise RuntimeError(timing["error"])
            row.update(status="ok", median_ms=round(timing["median_ms"], 4), min_ms=round(timing["min_ms"], 4))
            feeds = {
                name: array.astype(input_types[name])
                for name, array in batch_arrays(tokenizer, names, batch, seq).items()
                if name in input_types
            }
            outputs = dict(zip([o.name for o in session.get_outputs()], runner.run(feeds), strict=True))
            if first:
                reference[(batch, seq)] = outputs
            elif (batch, seq) in reference:
                name = next(n for n in outputs if n in reference[(batch, seq)])
                metrics = compare_arrays(reference[(batch, seq)][name], outputs[name], feeds["attention_mask"])
                row.update(compared=name, cosine_min_vs_first=metrics.cosine_min, max_abs_vs_first=metrics.max_abs)
        except Exception as error:
            row["status"] = f"failed: {str(error).splitlines()[0][:160]}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def attention_kernels(path: Path, tokenizer: Path, names: list[str]) -> list[dict[str, Any]]:
    return compare_variants([(label, path, {"sdpa_kernel": str(bits)}) for bits, label in KERNELS.items()], tokenizer, names, SHAPES)


def pruned_to_outputs(model: onnx.ModelProto, keep: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` with only the outputs ``keep`` and the nodes they need (ONNX Runtime runs every
    node of a graph whatever outputs a run asks for, and a CUDA graph replays them all)."""
    pruned = onnx.ModelProto()
    pruned.CopyFrom(model)
    wanted = set(keep)
    kept_outputs = [o for o in pruned.graph.output if o.name in wanted]
    del pruned.graph.output[:]
    pruned.graph.output.extend(kept_outputs)
    kept_nodes, _ = live_nodes(list(pruned.graph.node), [o.name for o in kept_outputs])
    del pruned.graph.node[:]
    pruned.graph.node.extend(kept_nodes)
    used = {i for node in pruned.graph.node for i in node.input}
    kept_inits = [init for init in pruned.graph.initializer if init.name in used]
    del pruned.graph.initializer[:]
    pruned.graph.initializer.extend(kept_inits)
    kept_inputs = [i for i in pruned.graph.input if i.name in used]
    del pruned.graph.input[:]
    pruned.graph.input.extend(kept_inputs)
    return pruned


def int32_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose INT64 inputs are INT32, so the casts to INT32 that the fused ops need go."""
    changed = onnx.ModelProto()
    changed.CopyFrom(model)
    graph = changed.graph
    inputs = {i.name for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.INT64}
    for i in graph.input:
        if i.name in inputs:
            i.type.tensor_type.elem_type = onnx.TensorProto.INT32
    renamed: dict[str, str] = {}
    for node in list(graph.node):
        to = next((a.i for a in node.attribute if a.name == "to"), None)
        if node.op_type == "Cast" and node.input[0] in inputs and to == onnx.TensorProto.INT32:
            renamed[node.output[0]] = node.input[0]
            graph.node.remove(node)
    for node in graph.node:
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
    stale = [v for v in graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.INT64]  # re-inferred at load
    for info in stale:
        graph.value_info.remove(info)
    return changed


def engine_variants(path: Path, tokenizer: Path, names: list[str]) -> list[dict[str, Any]]:
    """The built engine against copies changed in one way each: its vocabulary projection unpadded (where
    the build padded one), one output only, INT32 inputs. (CUDA EP options -- GEMM tunable ops, one unified
    stream, copies off the default stream -- were measured at code 6bdc6dd and changed nothing; causal
    attention given key lengths instead of the 2-D mask was measured at f578394 and is now how it is built.)"""
    model = onnx.load(str(path))
    outputs = [o.name for o in model.graph.output]
    folder = Path(tempfile.mkdtemp(prefix="variants-"))
    graphs: dict[str, onnx.ModelProto] = {}
    unpadded = onnx.ModelProto()
    unpadded.CopyFrom(model)
    if unpad_vocab_projection(unpadded):
        graphs["vocabulary projection unpadded"] = unpadded
    graphs.update({f"only {name}": pruned_to_outputs(model, [name]) for name in outputs})
    graphs["int32 inputs"] = int32_inputs(model)
    graphs[f"int32 inputs, only {outputs[0]}"] = pruned_to_outputs(graphs["int32 inputs"], [outputs[0]])
    variants: list[tuple[str, Path, dict[str, str]]] = [("as built", path, {})]
    for label, graph in graphs.items():
        file = folder / (re.sub(r"[^a-z0-9]+", "_", label) + ".onnx")
        onnx.save(graph, str(file))
        variants.append((label, file, {}))
    return compare_variants(variants, tokenizer, names, SHAPES)


def kernel_profile(path: Path, tokenizer: Path, names: list[str]) -> dict[str, Any]:
    """Per shape: the kernels of one run replaying its CUDA graph (where the grid uses one) and without."""
    result: dict[str, Any] = {"unit": "us per run"}
    for batch, seq, runs in PROFILE_SHAPES:
        graph = batch * seq <= GRAPH_TOKENS
        result[f"b{batch}_s{seq}"] = _kernels_at(path, batch_arrays(tokenizer, names, batch, seq), runs, graph)
    return result


def _kernels_at(path: Path, feeds: dict[str, np.ndarray], runs: int, graph: bool) -> dict[str, Any]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.init()
    session, refused = cuda_session(str(path))
    runner = DeviceRunner(session)
    result: dict[str, Any] = {"runs": runs}
    modes = (("graph_replay", True), ("no_graph", False)) if graph and refused is None else (("no_graph", False),)
    for label, replay in modes:
        slot = runner.slot(feeds, graph=replay)
        wall = time_for(lambda: runner.launch(slot), TimingBudget(target_seconds=0.5))  # noqa: B023 (called at once)
        trace = Path(tempfile.mkdtemp(prefix="trace-")) / "trace.json"
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(runs):
                runner.launch(slot)
        prof.export_chrome_trace(str(trace))
        events = [e for e in json.loads(trace.read_text()).get("traceEvents", []) if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
        by_name: dict[str, list[float]] = {}
        for event in events:
            by_name.setdefault(str(event.get("name", "?"))[:140], []).append(float(event.get("dur", 0.0)))
        top = sorted(by_name.items(), key=lambda item: -sum(item[1]))
        busy = sum(sum(d) for d in by_name.values()) / runs
        result[label] = {
            "wall_median_us": round(wall.median_ms * 1000, 1),
            "kernels_per_run": round(len(events) / runs, 1),
            "kernel_busy_us": round(busy, 1),
            "between_kernels_us": round(wall.median_ms * 1000 - busy, 1),
            "by_kind": _kernel_kinds(by_name, runs),
            "top": [
                {
                    "kernel": name,
                    "per_run": round(len(d) / runs, 2),
                    "us_per_run": round(sum(d) / runs, 1),
                    "us_each": round(float(np.median(d)), 2),
                }
                for name, d in top[:40]
            ],
        }
        print(json.dumps({label: {k: v for k, v in result[label].items() if k != "top"}}), flush=True)
    return result


KERNEL_KINDS: tuple[tuple[str, str], ...] = (
    ("attention", r"flash|fmha|attention|sdpa|softmax"),
    ("gemm", r"gemm|xmma|cutlass|nvjet|sm90|cublas"),
    ("layernorm", r"layernorm|layer_norm"),
    ("gelu", r"gelu"),
    ("copy/cast", r"memcpy|memset|cast|copy|transpose|addbias"),
)


def _kernel_kinds(by_name: dict[str, list[float]], runs: int) -> dict[str, dict[str, float]]:
    kinds: dict[str, dict[str, float]] = {}
    for name, durations in by_name.items():
        kind = next((k for k, pattern in KERNEL_KINDS if re.search(pattern, name, re.IGNORECASE)), "other")
        entry = kinds.setdefault(kind, {"per_run": 0.0, "us_per_run": 0.0})
        entry["per_run"] = round(entry["per_run"] + len(durations) / runs, 2)
        entry["us_per_run"] = round(entry["us_per_run"] + sum(durations) / runs, 1)
    return kinds


def request_path(path: Path, tokenizer: Path, names: list[str]) -> dict[str, Any]:
    session, _ = cuda_session(str(path))
    runner = DeviceRunner(session)
    apart = DeviceRunner(session, pack_inputs=False)  # the inputs copied one by one, as before packing
    wanted = ["sentence_embedding"]
    samples = [batch_arrays(tokenizer, names, 1, 128)] + [
        {name: np.roll(array, shift, axis=1) for name, array in batch_arrays(tokenizer, names, 1, 128).items()} for shift in range(1, 8)
    ]
    slot = runner.slot(samples[0], graph=True)
    slot_apart = apart.slot(samples[0], graph=False)
    for _ in range(5):
        runner.run(samples[0], wanted)
    step = iter(range(1 << 30))

    def full() -> None:
        runner.run(samples[next(step) % len(samples)], wanted)

    parts = {
        "run (copy in, replay, sync, copy out)": full,
        "launch (replay + synchronize_outputs)": lambda: runner.launch(slot),
        "replay without synchronize_outputs": lambda: session.run_with_iobinding(slot.binding, slot.run_options),
        "synchronize_outputs alone": lambda: slot.binding.synchronize_outputs(),
        "copy inputs in (one packed update_inplace)": lambda: runner.load(slot, samples[1]),
        "copy inputs in (update_inplace per input)": lambda: apart.load(slot_apart, samples[1]),
        "copy one output out": lambda: runner.fetch(slot, wanted),
    }
    result: dict[str, Any] = {name: round(time_callable(fn, runs=300, warmup=20).median_ms * 1000, 1) for name, fn in parts.items()}
    # Is the sync needed? Outputs read right after the replay, without it, against outputs read after it.
    agree = True
    for feeds in samples:
        runner.load(slot, feeds)
        session.run_with_iobinding(slot.binding, slot.run_options)
        unsynced = runner.fetch(slot, wanted)[0].copy()
        runner.launch(slot)
        agree &= bool(np.array_equal(unsynced, runner.fetch(slot, wanted)[0]))
    result["unit"] = "us (median)"
    result["outputs_without_sync_equal"] = agree
    return result


def tokenizer_time(tokenizer: Path) -> dict[str, Any]:
    """One 128-token text; ``plain_ascii_us`` is the served model's path for plain ASCII BERT texts (no
    BertNormalizer, texts lowercased first), null for tokenizers without that normalizer."""
    text = text_samples(tokenizer, 128, 1)[0]
    tok = load_tokenizer_file(tokenizer)
    tok.no_padding()
    result: dict[str, Any] = {"tokens": len(tok.encode(text).ids), "plain_ascii_us": None}

    def median_us(call: Callable[[], Any]) -> float:
        return round(time_callable(call, runs=500, warmup=20).median_ms * 1000, 1)

    for method in ("encode_batch", "encode_batch_fast"):  # the served tokenizer model calls the second
        result[f"{method}_us"] = median_us(lambda: getattr(tok, method)([text]))  # noqa: B023 (called at once)
    result["encode_us"] = median_us(lambda: tok.encode(text))  # one text without the batch's thread pool
    if type(tok.normalizer).__name__ == "BertNormalizer":
        plain = load_tokenizer_file(tokenizer)
        plain.no_padding()
        plain.normalizer = None
        result["plain_ascii_us"] = median_us(lambda: plain.encode_batch_fast([text.lower()]))
        result["plain_ascii_encode_us"] = median_us(lambda: plain.encode(text.lower()))
    return result


IDLE_GAPS_MS = (0.0, 0.5, 2.0, 10.0)


def idle_gap(subject: Subject, runs: int = 200) -> dict[str, Any]:
    """One request's work in a served step, timed after the process slept ``gap`` ms (0: back to back), as a step
    does between requests at one client: the served encoder's encode and pack of one 128-token text, and (with a CUDA
    provider) the FP16 engine's run at b1 s128 through the served runner (copy in, replay, copy out). Medians in us.
    Two ways of encoding one text that keep tokenizers' thread pool out of it (a batch call hands even one text to
    a pool thread, which may sleep on another core) are timed beside the served one: ``Tokenizer.encode`` in the
    calling thread (it also computes offsets), and the served batch call with ``TOKENIZERS_PARALLELISM=false``
    (read at each call). Runs on the CPU too (the engine part then says why it is missing)."""
    import time

    from toolkit.backends.common.text_encoder import TextEncoder

    encoder = TextEncoder(str(subject.tokenizer), max_seq_len=128)
    text = text_samples(subject.tokenizer, 128, 1)[0]
    work: dict[str, Callable[[], Any]] = {
        "tokenize and pack one text": lambda: encoder.tensors(encoder.encodings([text])),
        "encode one text in the calling thread (Tokenizer.encode)": lambda: encoder.tokenizer.encode(text),
        "encode one text, batch call without the thread pool": lambda: _without_pool(lambda: encoder.encodings([text])),
    }
    result: dict[str, Any] = {"unit": "us (median)", "gaps_ms": list(IDLE_GAPS_MS)}
    if "CUDAExecutionProvider" in ort_providers() and "fp16" in subject.files:
        runner = DeviceRunner(cuda_session(str(subject.files["fp16"]))[0])
        feeds = batch_arrays(subject.tokenizer, subject.names, 1, 128)
        work["engine run b1 s128 (copy in, replay, copy out)"] = lambda: runner.run(feeds)
    else:
        result["engine"] = "not timed: no CUDA provider or no fp16 engine"
    for name, call in work.items():
        for _ in range(20):
            call()
        medians = []
        for gap in IDLE_GAPS_MS:
            times = []
            for _ in range(runs):
                if gap:
                    time.sleep(gap / 1000.0)
                start = time.perf_counter()
                call()
                times.append((time.perf_counter() - start) * 1e6)
            medians.append(round(float(np.median(times)), 1))
        result[name] = medians
    return result


def _without_pool(call: Callable[[], Any]) -> Any:
    """``call()`` with tokenizers' parallelism off (it reads ``TOKENIZERS_PARALLELISM`` at each batch call)."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        return call()
    finally:
        if before is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


def ort_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def timing_conditions(subject: Subject) -> dict[str, Any]:
    """FP16 at b1 s128, timed the grid's way (a fresh slot, ``time_for`` with the grid's budget) and at length
    (400 runs after 20) in one process as it changes: the FP16 session alone; an FP32 session loaded but not
    run; that session run without CUDA graphs; the hybrid session run with them; PyTorch's CUDA context up.
    The diagnostic H100 run (code fcc4d65, ``results/h100/NOTES.md``) found that a second session that has run slows
    every replay in the process (which is why the grid times each engine in a process of its own, ``toolkit.measurement.isolated``)."""
    feeds = batch_arrays(subject.tokenizer, subject.names, 1, 128)
    budget = GridPlan(models=(subject.model,)).budget()

    def session(precision: str, graphs: bool = True) -> DeviceRunner:
        return DeviceRunner(cuda_session(str(subject.files[precision]), graphs=graphs)[0], max_graphs=(1 << 10) if graphs else 0)

    def run_for(runner: DeviceRunner, seconds: float) -> None:
        slot = runner.slot(feeds, graph=runner.max_graphs > 0)
        time_for(lambda: runner.launch(slot), TimingBudget(target_seconds=seconds))

    fp16 = session("fp16")

    def times() -> dict[str, float]:
        grid = fp16.slot(feeds, graph=True)
        grid_timing = time_for(lambda: fp16.launch(grid), budget)
        long = fp16.slot(feeds, graph=True)
        long_timing = time_callable(lambda: fp16.launch(long), runs=400, warmup=20)
        return {
            "grid_median_us": round(grid_timing.median_ms * 1000, 1),
            "grid_p90_us": round(grid_timing.p90_ms * 1000, 1),
            "long_median_us": round(long_timing.median_ms * 1000, 1),
            "long_p90_us": round(long_timing.p90_ms * 1000, 1),
        }

    result: dict[str, Any] = {"unit": "us", "fp16 alone": [times(), times()]}
    fp32 = session("fp32", graphs=False)
    result["fp32 loaded, not run"] = times()
    run_for(fp32, 0.3)
    result["fp32 ran 0.3 s without CUDA graphs"] = times()
    run_for(session("hybrid"), 0.3)
    result["hybrid ran 0.3 s with CUDA graphs"] = times()
    import torch

    torch.zeros(1, device="cuda").sum().item()  # the grid's process holds PyTorch's CUDA context (eager points)
    result["and torch's CUDA context"] = times()
    return result


def serving_variants(subject: Subject, precision: str = "fp16") -> dict[str, Any]:
    """The text ensemble of one engine served three ways by one Triton server on free ports: as built, without
    the dynamic batcher (tokenizer and engine), and with one ONNX Runtime thread in the engine. Each variant's
    p50 at b1 s128 c1 (two interleaved rounds) and throughput at b1 s128 c4, with every model's server time."""
    tokenizer, engine, ensemble = (
        tokenizer_model(subject.model),
        engine_model(subject.model, precision),
        ensemble_model(subject.model, precision),
    )
    variants: dict[str, Callable[[str, model_config_pb2.ModelConfig], None]] = {
        "as built": lambda role, config: None,
        "no dynamic batcher": lambda role, config: config.ClearField("dynamic_batching") if role != "ensemble" else None,
        "engine on one ORT thread": lambda role, config: (
            config.parameters["intra_op_threads"].CopyFrom(model_config_pb2.ModelParameter(string_value="1")) if role == "engine" else None
        ),
    }
    folder = Path(tempfile.mkdtemp(prefix="serving-variants-"))
    repository = folder / "repository"
    names = {}
    for index, (label, change) in enumerate(variants.items()):
        suffix = f"_v{index}"
        renamed = {tokenizer: tokenizer + suffix, engine: engine + suffix, ensemble: ensemble + suffix}
        for role, original in (("tokenizer", tokenizer), ("engine", engine), ("ensemble", ensemble)):
            shutil.copytree(subject.repository / original, repository / renamed[original], symlinks=True)
            config = config_from_text((subject.repository / original / "config.pbtxt").read_text())
            config.name = renamed[original]
            for step in config.ensemble_scheduling.step:
                step.model_name = renamed[step.model_name]
            change(role, config)
            (repository / renamed[original] / "config.pbtxt").write_text(config_text(config))
        names[label] = renamed[ensemble]
    text = write_perf_analyzer_data(folder / "text.json", perf_analyzer_data(subject.tokenizer, (TEXT,), 128))
    result: dict[str, Any] = {"precision": precision, "batch_size": 1, "seq_len": 128, "runs": []}
    with running_server(repository, state_dir=folder / "state", timeout=300) as server:
        url = f"localhost:{server.ports.grpc}"
        statistics = StatisticsReader(url)
        plan = [(label, 1) for _ in range(2) for label in variants] + [(label, 4) for label in variants]
        for label, concurrency in plan:
            args = PerfAnalyzerArgs(
                model=names[label], csv_path=folder / "pa.csv", url=url, concurrency=(concurrency, concurrency), input_data=text,
                measurement_request_count=100, stability_percentage=15.0, max_trials=5,
            )  # fmt: skip
            row: dict[str, Any] = {"variant": label, "concurrency": concurrency}
            try:
                rows, hops = statistics.around(lambda: run_perf_analyzer(args, timeout_s=120))  # noqa: B023 (called at once)
                metrics = rows[0]
                row.update(
                    status="ok", p50_ms=metrics["latency_p50"], p90_ms=metrics["latency_p90"], throughput=metrics["throughput"], hops=hops,
                )  # fmt: skip
            except Exception as error:
                row["status"] = f"failed: {str(error).splitlines()[0][:200]}"
            result["runs"].append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "hops"}), flush=True)
    return result


def cpu_threads(fp32: Path, tokenizer: Path, names: list[str]) -> dict[str, Any]:
    feeds = batch_arrays(tokenizer, names, 1, 128)
    result: dict[str, Any] = {"logical_cpus": os.cpu_count()}
    for label, threads in (("ort_default_threads_ms", 0), ("all_logical_threads_ms", os.cpu_count() or 0)):
        session = session_for(fp32, "cpu", threads=threads)
        result[label] = round(time_callable(lambda: session.run(None, feeds), runs=30, warmup=3).median_ms, 3)  # noqa: B023
    return result


@dataclass(frozen=True)
class Subject:
    """What every experiment may read: the repository, the model, its engine files and inputs."""

    repository: Path
    model: str
    files: dict[str, Path]  # precision -> ONNX engine
    tokenizer: Path
    names: list[str]  # engine input names


EXPERIMENTS: dict[str, Callable[[Subject], Any]] = {
    "request_path": lambda s: request_path(s.files["fp16"], s.tokenizer, s.names),
    "tokenizer": lambda s: tokenizer_time(s.tokenizer),
    "cpu_threads": lambda s: cpu_threads(s.files["fp32"], s.tokenizer, s.names),
    "kernel_profile": lambda s: kernel_profile(s.files["fp16"], s.tokenizer, s.names),
    "engine_variants": lambda s: engine_variants(s.files["fp16"], s.tokenizer, s.names),
    "attention_kernels": lambda s: attention_kernels(s.files["fp16"], s.tokenizer, s.names),
    "timing_conditions": timing_conditions,
    "serving_variants": serving_variants,
    "idle_gap": idle_gap,
}


@click.command(context_settings=CONTEXT_SETTINGS)
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@list_option("--models", default="bert-base-uncased", help="Models whose engines the experiments run on, one file each.")
@click.option("--experiments", "chosen", default=",".join(EXPERIMENTS), show_default=True, help="Comma-separated experiments to run.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
def main(repository: Path, models: str, chosen: str, out: Path) -> None:
    """Run the experiments on each model's engines and write OUT/<gpu>/experiments_<model>.json."""
    names_chosen = comma_items(chosen, "--experiments", allowed=tuple(EXPERIMENTS))
    for model in comma_items(models, "--models"):
        click.echo(f"wrote {run_experiments(repository, model, names_chosen, out)}")


def run_experiments(repository: Path, model: str, chosen: Iterable[str], out: Path) -> Path:
    """Each chosen experiment on ``model``'s engines, the record rewritten after each (a timeout keeps what ran)."""
    tokenizer = find_tokenizer(repository, model, None)
    names = list(engine_input_names(repository, model, "fp16", DEFAULT_RUNTIME))
    # The precisions built (the load runs build fp32 and fp16 only); an experiment that needs a missing one fails alone.
    found = {precision.value: engine_file(repository, model, precision.value, DEFAULT_RUNTIME) for precision in DEFAULT_PRECISIONS}
    files = {precision: path for precision, path in found.items() if path is not None}
    if not files:
        require_engine_file(repository, model, DEFAULT_PRECISIONS[0].value)  # says how to build one
    subject = Subject(repository, model, files, tokenizer, names)
    record = Experiments(model=model, device_info=device_info(), code=code_version())
    path = out / record.device_info["name"] / record.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in chosen:
        try:
            result = EXPERIMENTS[name](subject)
        except Exception as error:  # one failed experiment must not lose the others' numbers
            result = {"status": f"failed: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}"}
        record = replace(record, results={**record.results, name: result})
        print(json.dumps({name: result}, indent=1), flush=True)
        path.write_text(json.dumps(record.to_json(), indent=1) + "\n")
    return path


if __name__ == "__main__":
    main()
