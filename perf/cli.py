"""``python -m perf``: thin click commands over ``perf.sweep``, ``perf.engine_timing`` and ``perf.report``."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any, cast

import click

from perf.records import GridEnginePoint, GridMeasurement, GridMemory, Timed
from toolkit.cli import CONTEXT_SETTINGS, list_option
from toolkit.cli_values import batch_buckets as batch_bucket_spelling
from toolkit.cli_values import comma_ints, comma_items, one_item
from toolkit.errors import BadInputError, ToolkitError
from toolkit.measurement.timing import Device


def _items(value: str | None, flag: str) -> tuple[str, ...] | None:
    """None (the sweep's own setting) when the option is absent."""
    return None if value is None else comma_items(value, flag)


def _ints(value: str | None, flag: str) -> tuple[int, ...] | None:
    return None if value is None else comma_ints(value, flag)


def _one_length(value: str | None, why: str = "a load plan sends texts of one length") -> int | None:
    """The one ``--seq-lens`` value of a command that takes one (None when absent)."""
    return None if value is None else _length(value, why)


def _length(value: str, why: str) -> int:
    return comma_ints(one_item(value, "--seq-lens", why), "--seq-lens")[0]


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option("-v", "--verbose", is_flag=True, help="Log progress details.")
def main(verbose: bool) -> None:
    """Measure the Triton repository: perf_analyzer sweeps, engine-only timings, and the report."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")


@main.command()
@click.option("--plan", "sweep_name", default="default", show_default=True, help="Named sweep: default, gpu or paper.")
@click.option("--url", default="localhost:8001", show_default=True, help="Triton gRPC address.")
@click.option("--metrics-url", default=None, help="Triton metrics endpoint for GPU metrics (default localhost:8002/metrics).")
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="tokenizer.json to make inputs from (default: the repository's tokenizer model).",
)
@list_option("--models", help="Override the sweep's models, e.g. minilm,gpt2.")
@list_option("--precisions", help="Override precisions, e.g. fp16,hybrid.")
@list_option("--batch-sizes", help="Override batch sizes, e.g. 1,8.")
@list_option("--seq-lens", help="Override sequence lengths, e.g. 32,128.")
@click.option("--concurrency", "concurrencies", default=None, help="Override concurrency levels, e.g. 1,2.")
@click.option("--targets", default=None, help="engine, ensemble or both: engine,ensemble.")
@list_option("--runtimes", help="onnxruntime, tensorrt or both.")
@click.option(
    "--cpu-baseline/--no-cpu-baseline",
    default=True,
    show_default=True,
    help="Time the FP32 ONNX engine on the CPU at every (model, batch, seq).",
)
@click.option("--retry-errors", is_flag=True, help="Run again configurations that ended in an error.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def sweep(
    sweep_name: str,
    url: str,
    metrics_url: str | None,
    repository: Path,
    out: Path,
    tokenizer: Path | None,
    models: str | None,
    precisions: str | None,
    batch_sizes: str | None,
    seq_lens: str | None,
    concurrencies: str | None,
    targets: str | None,
    runtimes: str | None,
    cpu_baseline: bool,
    retry_errors: bool,
    no_progress: bool,
) -> None:
    """Run or resume a perf_analyzer sweep against a running server; results go to OUT/<device>/."""
    from perf.sweep import get_sweep, run_sweep, summary

    try:
        chosen = get_sweep(
            sweep_name,
            models=_items(models, "--models"),
            precisions=_items(precisions, "--precisions"),
            batch_sizes=_ints(batch_sizes, "--batch-sizes"),
            seq_lens=_ints(seq_lens, "--seq-lens"),
            concurrencies=_ints(concurrencies, "--concurrency"),
            targets=_items(targets, "--targets"),
            runtimes=_items(runtimes, "--runtimes"),
        )
        out_dir = run_sweep(
            chosen,
            url=url,
            repository=repository,
            out=out,
            tokenizer=tokenizer,
            cpu_baseline=cpu_baseline,
            retry_errors=retry_errors,
            progress=not no_progress,
            metrics_url=metrics_url,
        )
    except (ToolkitError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{out_dir}: {json.dumps(summary(out_dir), sort_keys=True)}")


@main.command()
@click.option("--plan", "plan_name", default="load", show_default=True, help="Named load plan: load (GPU) or load-cpu (CI-sized).")
@click.option("--url", default="localhost:8001", show_default=True, help="Triton gRPC address.")
@click.option(
    "--metrics-url", default=None,
    help="Triton metrics endpoint, for the Python steps' phase times (default: the started server's, else localhost:8002/metrics).",
)  # fmt: skip
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@list_option("--models", help="Override the plan's models, e.g. minilm,bert-base-uncased.")
@list_option("--precisions", help="Override precisions, e.g. fp16,hybrid.")
@click.option("--paths", default=None, help="ensemble, onehop (built with build_engines.py --one-hop) or both.")
@list_option("--texts-per-request", help="Texts per request, e.g. 1,4,16.")
@click.option("--concurrency", "concurrencies", default=None, help="Concurrency levels, e.g. 1,8,64.")
@list_option("--seq-lens", help="Tokens per text (one length; default: the plan's).")
@click.option("--window-ms", type=click.IntRange(min=100), default=None, help="perf_analyzer's measurement window.")
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    default=Path("build/server"),
    show_default=True,
    help="Where `python -m toolkit.serving start` left the server's pid (its memory is recorded).",
)
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def load(
    plan_name: str,
    url: str,
    metrics_url: str | None,
    repository: Path,
    out: Path,
    models: str | None,
    precisions: str | None,
    paths: str | None,
    texts_per_request: str | None,
    concurrencies: str | None,
    seq_lens: str | None,
    window_ms: int | None,
    state_dir: Path,
    no_progress: bool,
) -> None:
    """Many clients sending one text each at rising concurrency: throughput, p50/p90/p99, the batches the server
    formed, failures and memory; OUT/<device>/load.jsonl."""
    from perf.load import LOADS, run_load
    from toolkit.serving.server import read_handle

    try:
        if plan_name not in LOADS:
            raise click.BadParameter(f"{plan_name!r}: choose from {', '.join(LOADS)}", param_hint="--plan")
        overrides: dict[str, Any] = {
            "models": _items(models, "--models"),
            "precisions": _items(precisions, "--precisions"),
            "paths": _items(paths, "--paths"),
            "texts_per_request": _ints(texts_per_request, "--texts-per-request"),
            "concurrencies": _ints(concurrencies, "--concurrency"),
            "seq_len": _one_length(seq_lens),
            "window_ms": window_ms,
        }
        plan = dataclasses.replace(LOADS[plan_name], **{k: v for k, v in overrides.items() if v is not None})
        handle = read_handle(state_dir)
        if metrics_url is None:
            metrics_url = f"http://{handle.host}:{handle.ports.metrics}/metrics" if handle else "http://localhost:8002/metrics"
        elif "://" not in metrics_url:
            metrics_url = f"http://{metrics_url}"
        pid = handle.pid if handle else None
        out_dir, summary = run_load(plan, url, repository, out, pid, progress=not no_progress, metrics_url=metrics_url)
    except (ToolkitError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    from perf.load_report import levels_summary, run_points

    click.echo(levels_summary(run_points(out_dir, summary.run_id), out_dir))
    click.echo(f"{out_dir / 'load.jsonl'}: {json.dumps(summary.to_json(), sort_keys=True)}")


@main.command()
@list_option("--models", required=True, help="The model (one short name in the repository), e.g. minilm.")
@list_option("--precisions", default="fp16", help="The precision whose serving is tuned (one).")
@click.option("--p99-ms", type=click.FloatRange(min=0, min_open=True), required=True, help="The p99 budget a configuration must keep.")
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--plan", "plan_name", default="load", show_default=True, help="The load plan whose levels measure each candidate.")
@click.option("--concurrency", "concurrencies", default="32,128", show_default=True, help="Levels each candidate is measured at.")
@list_option("--texts-per-request", default="1", help="Texts per request (one number).")
@list_option("--seq-lens", help="Tokens per text (one length; default: the plan's).")
@click.option("--window-ms", type=click.IntRange(min=100), default=None, help="perf_analyzer's window (default: the plan's).")
@click.option("--paths", default="ensemble,onehop", show_default=True, help="Serving paths to try (onehop where built).")
@click.option("--tokenizer-instances", default="1,2,4,8", show_default=True)
@click.option("--engine-instances", default="1,2,4", show_default=True)
@click.option("--max-queue-delay-us", default="0,200,1000", show_default=True, help="Dynamic batcher queue delays to try.")
@click.option("--tokenizer-threads", default="0", show_default=True, help="Threads per tokenizer (or one-hop) instance to try (0: every core; 1: its own thread, no pool).")
@click.option(
    "--batch-buckets", default="pow2", show_default=True,
    help="Engine batch buckets to try (CUDA graphs), as build_engines.py spells them: pow2, a step such as 8, off; e.g. pow2,8,off.",
)
@click.option(
    "--dynamic-batching", default="on", show_default=True,
    help="Triton's dynamic batcher on the tokenizer and engine models to try: on, off or on,off (off: a lone request skips one "
    "thread hand-off per step, as build_engines.py's --no-dynamic-batching; needs --max-queue-delay-us 0).",
)
@click.option(
    "--confirm", type=click.IntRange(min=0), default=1, show_default=True,
    help="Measure the two best configurations this many more times and keep the better mean (one measurement varies by about 5%).",
)
@click.option("--apply/--no-apply", default=False, show_default=True, help="Keep the best configuration in the repository (and its manifest).")
def tune(
    models: str,
    precisions: str,
    p99_ms: float,
    repository: Path,
    out: Path,
    plan_name: str,
    concurrencies: str,
    texts_per_request: str,
    seq_lens: str | None,
    window_ms: int | None,
    paths: str,
    tokenizer_instances: str,
    engine_instances: str,
    max_queue_delay_us: str,
    tokenizer_threads: str,
    batch_buckets: str,
    dynamic_batching: str,
    confirm: int,
    apply: bool,
) -> None:
    """Search serving options of MODEL's text ensemble (and one-hop model) on a server of its own: the highest
    throughput whose p99 stays under --p99-ms; OUT/<device>/tune.jsonl."""
    from perf.load import LOADS
    from perf.tune import Space, trials_table
    from perf.tune import tune as run_tune
    from toolkit.serving import ServerOptions, running_server

    try:
        if plan_name not in LOADS:
            raise click.BadParameter(f"{plan_name!r}: choose from {', '.join(LOADS)}", param_hint="--plan")
        model = one_item(models, "--models", "a tune searches one model's serving options")
        precision = one_item(precisions, "--precisions", "the serving options it keeps are shared by the model's precisions")
        texts = int(one_item(texts_per_request, "--texts-per-request", "each candidate is measured at one request size"))
        changes: dict[str, Any] = {"concurrencies": comma_ints(concurrencies, "--concurrency"), "texts_per_request": (texts,), "precisions": (precision,)}
        changes.update({k: v for k, v in (("seq_len", _one_length(seq_lens)), ("window_ms", window_ms)) if v is not None})
        plan = dataclasses.replace(LOADS[plan_name], models=(model,), **changes)
        delays = comma_ints(max_queue_delay_us, "--max-queue-delay-us", minimum=0)
        buckets = tuple(batch_bucket_spelling(value) for value in comma_items(batch_buckets, "--batch-buckets"))
        space = Space(comma_items(paths, "--paths"), comma_ints(tokenizer_instances, "--tokenizer-instances"),
                      comma_ints(engine_instances, "--engine-instances"), delays, comma_ints(tokenizer_threads, "--tokenizer-threads", minimum=0), buckets,
                      tuple(value == "on" for value in comma_items(dynamic_batching, "--dynamic-batching", allowed=("on", "off"))))  # fmt: skip
        explicit = ServerOptions(model_control="explicit", load_models=("*",))
        with running_server(repository, state_dir=Path("build/tune_server"), timeout=600, options=explicit) as handle:
            best, trials, path = run_tune(
                repository, model, precision, p99_ms, f"127.0.0.1:{handle.ports.grpc}", plan, space, out, apply, click.echo, confirm,
                server_pid=handle.pid, metrics_url=f"http://127.0.0.1:{handle.ports.metrics}/metrics",
            )  # fmt: skip
    except (ToolkitError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(trials_table(trials, p99_ms))
    click.echo(f"best within p99 {p99_ms:g} ms: {best.candidate.flags()} ({best.score(p99_ms):.0f} requests/s)"
               + (f"; written into {repository}" if apply else "; the repository is unchanged (--apply keeps it)"))  # fmt: skip
    click.echo(f"appended to {path}")


@main.command()
@list_option("--models", required=True, help="Model short names in the repository, e.g. minilm.")
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@click.option("--tokenizer", type=click.Path(path_type=Path, exists=True), default=None, help="tokenizer.json (only with one model).")
@list_option("--precisions", default="fp32,fp16,hybrid")
@list_option("--batch-sizes", default="1")
@list_option("--seq-lens", default="128")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--cuda-graphs/--no-cuda-graphs", default=False, show_default=True, help="CUDA EP only: replay a captured CUDA graph.")
@click.option("--runs", type=int, default=50, show_default=True)
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--torch/--no-torch", "with_torch", default=False, show_default=True, help="Also time the model in PyTorch eager on --device (rebuilt from its manifest).")
def engine(
    models: str,
    repository: Path,
    out: Path,
    tokenizer: Path | None,
    precisions: str,
    batch_sizes: str,
    seq_lens: str,
    device: str,
    cuda_graphs: bool,
    runs: int,
    warmup: int,
    with_torch: bool,
) -> None:
    """Time the repository's ONNX engines outside Triton (plus the CPU FP32 baseline and PyTorch eager), at every
    model, batch size and length."""
    from perf.engine_timing import time_engines
    from perf.torch_models import torch_baseline

    try:
        names = comma_items(models, "--models")
        if tokenizer is not None and len(names) > 1:
            raise BadInputError("--tokenizer names one model's tokenizer: give one model with it, or drop it")
        shapes = [(b, q) for b in comma_ints(batch_sizes, "--batch-sizes") for q in comma_ints(seq_lens, "--seq-lens")]
        for model, (batch_size, seq_len) in ((m, shape) for m in names for shape in shapes):
            factory = functools.partial(torch_baseline, repository, model) if with_torch else None
            records, path = time_engines(
                model, repository, out, precisions=comma_items(precisions, "--precisions"), batch_size=batch_size, seq_len=seq_len,
                device=cast(Device, device), cuda_graph=cuda_graphs, runs=runs, warmup=warmup, tokenizer=tokenizer, torch_factory=factory,
            )  # fmt: skip
            for record in records:
                click.echo(f"{record.key}: " + (f"median {record.median_ms:.3f} ms, p90 {record.p90_ms:.3f} ms" if record.ok else f"error {record.error}"))
            click.echo(f"appended to {path}")
    except (ToolkitError, ValueError) as error:
        raise click.ClickException(str(error)) from error


def _grid_line(record: GridMeasurement) -> str:
    if not record.ok:
        return f"{record.key}: error {record.error}"
    if isinstance(record, GridMemory):
        return f"{record.key}: {record.gpu_memory_mib} MiB on the GPU, file {record.file_mib:.0f} MiB"
    line = f"{record.key}: median {record.median_ms:.3f} ms" if isinstance(record, Timed) else record.key
    if isinstance(record, GridEnginePoint):
        line += " (graph)" if record.cuda_graph else ""
        if record.cosine_min is not None:
            line += f", cosine min {record.cosine_min:.7f}, NaN {record.nan_count}, Inf {record.inf_count}"
    return line


@main.command()
@list_option("--models", default="bert-base-uncased,gpt2", help="Models in the repository.")
@click.option("--repository", type=click.Path(path_type=Path), default=Path("model_repository"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
@list_option("--precisions", default="fp32,fp16,hybrid")
@list_option("--batch-sizes", default="1,2,4,8,16,32")
@list_option("--seq-lens", default="32,64,128,256,512")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cuda", show_default=True)
@click.option("--graph-token-limit", type=int, default=4096, show_default=True, help="CUDA graphs for shapes of at most this many tokens.")
@click.option("--seconds", "target_seconds", type=float, default=0.3, show_default=True, help="Timing budget per point.")
@click.option("--cpu-baseline/--no-cpu-baseline", default=True, show_default=True, help="CPU FP32 baseline at a few points (GPU runs).")
@click.option("--torch/--no-torch", "with_torch", default=True, show_default=True, help="PyTorch eager FP32/FP16 at b1 s128 and b32 s512.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def grid(
    models: str,
    repository: Path,
    out: Path,
    precisions: str,
    batch_sizes: str,
    seq_lens: str,
    device: str,
    graph_token_limit: int,
    target_seconds: float,
    cpu_baseline: bool,
    with_torch: bool,
    no_progress: bool,
) -> None:
    """Engine-only grid: every precision x batch x length, timed and compared with FP32 in one run."""
    from perf.engine_grid import GridPlan, run_grid
    from perf.torch_models import torch_baseline

    try:
        plan = GridPlan(
            models=_items(models, "--models") or (),
            precisions=_items(precisions, "--precisions") or (),
            batch_sizes=_ints(batch_sizes, "--batch-sizes") or (),
            seq_lens=_ints(seq_lens, "--seq-lens") or (),
            device=cast(Device, device),
            graph_token_limit=graph_token_limit,
            target_seconds=target_seconds,
        )
        factories = {m: functools.partial(torch_baseline, repository, m) for m in plan.models} if with_torch else {}
        path = run_grid(plan, repository, out, factories, cpu_baseline, progress=not no_progress, echo=lambda r: click.echo(_grid_line(r)))
    except (ToolkitError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"appended to {path}")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True)
def report(out: Path) -> None:
    """Write OUT/REPORT.md and its plots from every OUT/<device>/ folder."""
    from perf.report import write_report

    click.echo(str(write_report(out)))


@main.command()
@list_option("--models", required=True, help="Triton models to profile, one after the other: engines (minilm_fp16_onnx) or text ensembles (minilm_fp16).")
@click.option("--repository", type=click.Path(path_type=Path, exists=True, file_okay=False), default=Path("model_repository"), show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder for the config, input data and results (default build/model_analyzer/MODEL; only with one model).")
@list_option("--seq-lens", default="128", help="Tokens per input row (one length, capped at the model's max_seq_len).")
@click.option("--concurrency", default=None, help="Concurrency values instead of Model Analyzer's search, e.g. 1,2,4.")
@list_option("--batch-sizes", help="Batch sizes instead of Model Analyzer's search, e.g. 1,8.")
@click.option("--http-port", type=int, default=8100, show_default=True, help="Ports of the analyzer's own server, beside `make serve`'s.")
@click.option("--grpc-port", type=int, default=8101, show_default=True)
@click.option("--metrics-port", type=int, default=8102, show_default=True)
@click.option("--config-only", is_flag=True, help="Write the config and input data, print the command, start nothing.")
def analyze(
    models: str,
    repository: Path,
    out: Path | None,
    seq_lens: str,
    concurrency: str | None,
    batch_sizes: str | None,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    config_only: bool,
) -> None:
    """Triton Model Analyzer on each model: a loopback server of its own in explicit model control, input data from
    the repository's tokenizer, tritonclient's perf_analyzer. Exit status: the worst of Model Analyzer's."""
    from perf.model_analyzer import AnalyzerRequest, find_model_analyzer, run_model_analyzer, write_model_analyzer_config
    from toolkit.serving.server import Ports

    status = 0
    try:
        names = comma_items(models, "--models")
        if out is not None and len(names) > 1:
            raise BadInputError("--out holds one model's files: give one model with it, or drop it")
        for model in names:
            request = AnalyzerRequest(
                model=model,
                repository=repository,
                out_dir=out or Path("build/model_analyzer") / model,
                seq_len=_length(seq_lens, "the input data has one length"),
                ports=Ports(http=http_port, grpc=grpc_port, metrics=metrics_port),
                concurrency=_ints(concurrency, "--concurrency") or (),
                batch_sizes=_ints(batch_sizes, "--batch-sizes") or (),
            )
            if config_only:
                config = write_model_analyzer_config(request)
                click.echo(f"{find_model_analyzer()} profile -f {config}  # needs a server on :{grpc_port}, in explicit model control unless the config says reload_model_disable")
                continue
            status = max(status, run_model_analyzer(request))
    except ToolkitError as error:
        raise click.ClickException(str(error)) from error
    raise SystemExit(status)
