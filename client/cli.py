"""``python -m client``: send text to a served model, list models, or measure fidelity.

Commands only parse, validate and call library functions; every toolkit error ends the
process with one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

from toolkit.cli import CONTEXT_SETTINGS, list_option
from toolkit.cli_values import comma_ints, comma_items, one_item
from toolkit.errors import BadInputError, ToolkitError
from toolkit.names import LABEL, NEXT_TOKEN_ID, PROBABILITIES, SENTENCE_EMBEDDING, TRUNCATED, Precision
from toolkit.repository.naming import ensemble_model
from toolkit.runtimes import DEFAULT_RUNTIME, runtime_names

if TYPE_CHECKING:
    from client.fidelity import FidelityRecord

PRECISIONS = [p.value for p in Precision]
RUNTIMES = list(runtime_names())
DEFAULT_REPOSITORY = Path("model_repository")


def _client(url: str | None, protocol: str, timeout: float, retries: int) -> Any:
    from client.api import TritonTextClient

    return TritonTextClient(url, protocol, timeout_s=timeout, retries=retries)  # type: ignore[arg-type]


def server_options(command: Any) -> Any:
    """The connection flags shared by every command that talks to a server."""
    for option in reversed(
        [
            click.option("--url", default=None, help="host:port (default localhost:8001 for grpc, :8000 for http)."),
            click.option("--protocol", type=click.Choice(["grpc", "http"]), default="grpc", show_default=True),
            click.option("--timeout", type=float, default=60.0, show_default=True, help="Per-request timeout, s."),
            click.option("--retries", type=int, default=3, show_default=True, help="Retries when UNAVAILABLE."),
        ]
    ):
        command = option(command)
    return command


@click.group(context_settings=CONTEXT_SETTINGS)
def cli() -> None:
    """Client of the toolkit's Triton repository: text in, embeddings/next tokens out; fidelity."""


@cli.command()
@click.argument("texts", nargs=-1, required=True)
@list_option("--models", required=True, help="Short model names, e.g. minilm or gpt2.")
@list_option("--precisions", default="fp32", choices=PRECISIONS)
@list_option("--runtimes", default=DEFAULT_RUNTIME, choices=RUNTIMES)
@click.option(
    "--repository",
    type=click.Path(path_type=Path),
    default=DEFAULT_REPOSITORY,
    show_default=True,
    help="Where to find the tokenizer to decode GPT-2 tokens.",
)
@server_options
def infer(
    texts: tuple[str, ...],
    models: str,
    precisions: str,
    runtimes: str,
    repository: Path,
    url: str | None,
    protocol: str,
    timeout: float,
    retries: int,
) -> None:
    """Send TEXTS to the text ensemble of each model, precision and runtime; print what comes back, each line
    labelled with its model and precision."""
    client = _client(url, protocol, timeout, retries)
    chosen_runtimes = comma_items(runtimes, "--runtimes", RUNTIMES)
    for model in comma_items(models, "--models"):
        decode = _decoder(repository, model)
        for precision in comma_items(precisions, "--precisions", PRECISIONS):
            for runtime in chosen_runtimes:
                out = client.infer_text(ensemble_model(model, precision, runtime), list(texts))
                label = f"{model} {precision}" + (f" {runtime}" if len(chosen_runtimes) > 1 else "")
                click.echo("\n".join(f"{label}: {line}" for line in format_infer(texts, out, decode).splitlines()))


def _decoder(repository: Path, model: str) -> Any:
    """``ids -> text`` from the repository's tokenizer, or None when there is none."""
    from toolkit.models.tokenizers import load_tokenizer_file
    from toolkit.repository.lookup import find_tokenizer

    try:
        tokenizer = load_tokenizer_file(find_tokenizer(repository, model))
    except BadInputError:
        return None
    return lambda ids: tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def format_infer(texts: tuple[str, ...] | list[str], out: dict[str, Any], decode: Any = None) -> str:
    """Human-readable lines for an ensemble's answer (a classifier's label, an encoder's embedding, a decoder's
    next token)."""
    import numpy as np

    lines = []
    for i, text in enumerate(texts):
        truncated = bool(out[TRUNCATED][i].item()) if TRUNCATED in out else False
        head = f"[{i}] {text[:60]!r}" + (" (truncated)" if truncated else "")
        if LABEL in out:
            label = out[LABEL][i].reshape(-1)[0]
            label = label.decode() if isinstance(label, bytes) else str(label)
            lines.append(f"{head}: label {label!r} (probability {float(np.max(out[PROBABILITIES][i])):.4f})")
        elif SENTENCE_EMBEDDING in out:
            vector = out[SENTENCE_EMBEDDING][i]
            first = ", ".join(f"{v:+.4f}" for v in vector[:5])
            norm = np.linalg.norm(vector)
            lines.append(f"{head}: embedding dim {vector.shape[-1]}, norm {norm:.4f}, first [{first}]")
        elif NEXT_TOKEN_ID in out:
            token = int(np.asarray(out[NEXT_TOKEN_ID][i]).reshape(-1)[0])
            shown = f" {decode([token])!r}" if decode is not None else ""
            lines.append(f"{head}: next token id {token}{shown}")
        else:
            lines.append(f"{head}: " + ", ".join(f"{k} {tuple(v.shape)}" for k, v in out.items()))
    return "\n".join(lines)


@cli.command()
@server_options
def models(url: str | None, protocol: str, timeout: float, retries: int) -> None:
    """List the models the server has loaded."""
    client = _client(url, protocol, timeout, retries)
    client.require_ready()
    click.echo("\n".join(client.list_models()))


@cli.command()
@list_option("--models", required=True, help="Short model names, e.g. minilm.")
@list_option("--precisions", default="fp32,fp16,hybrid", choices=PRECISIONS)
@list_option("--batch-sizes", default="1,8")
@list_option("--seq-lens", default="32,128")
@click.option(
    "--inputs",
    "input_kinds",
    default="random,text",
    show_default=True,
    help="Comma list of random, text (corpus / WikiText-2), sentences (sentiment / SST-2).",
)
@click.option(
    "--dataset",
    type=click.Choice(["shipped", "hub"]),
    default="shipped",
    show_default=True,
    help="shipped: data/ files; hub: WikiText-2 and SST-2 via `datasets`.",
)
@list_option("--runtimes", default=DEFAULT_RUNTIME, choices=RUNTIMES)
@click.option("--requests", type=int, default=2, show_default=True, help="Requests per case.")
@click.option("--concurrency", type=int, default=2, show_default=True, help="Requests in flight at once.")
@click.option("--repository", type=click.Path(path_type=Path), default=DEFAULT_REPOSITORY, show_default=True)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    default=None,
    help="fp32 ONNX file (default: the repository's fp32 ONNX engine; only with one model).",
)
@click.option(
    "--tokenizer",
    type=click.Path(path_type=Path),
    default=None,
    help="tokenizer.json (default: the repository's tokenizer model; only with one model).",
)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True, help="Results root: OUT/<device>/.")
@click.option("--min-cosine", type=float, default=None, help="Cosine floor for all precisions (default per precision).")
@click.option("--min-top1", type=float, default=None, help="Top-1 agreement floor for logits outputs.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-check", is_flag=True, help="Record only; do not fail on mismatches.")
@click.option("--serve", is_flag=True, help="Start a server on --repository (free ports) for this run, stop it after.")
@server_options
def fidelity(
    models: str,
    precisions: str,
    batch_sizes: str,
    seq_lens: str,
    input_kinds: str,
    dataset: str,
    runtimes: str,
    requests: int,
    concurrency: int,
    repository: Path,
    reference: Path | None,
    tokenizer: Path | None,
    out: Path,
    min_cosine: float | None,
    min_top1: float | None,
    seed: int,
    no_check: bool,
    serve: bool,
    url: str | None,
    protocol: str,
    timeout: float,
    retries: int,
) -> None:
    """Compare served engines of each model with the fp32 reference; write OUT/<device>/fidelity_<model>.json and
    end with a verdict per model and precision against the bar (exit status 1 when one fails, unless --no-check)."""
    from client import fidelity as fid
    from client.inputs import INPUT_KINDS, Dataset
    from client.reference import OnnxReference, reference_onnx_path
    from toolkit.models.tokenizers import load_tokenizer_file
    from toolkit.repository.lookup import find_tokenizer

    names = comma_items(models, "--models")
    if len(names) > 1 and (reference or tokenizer):
        raise BadInputError("--reference and --tokenizer name one model's files: give one model with them, or drop them")
    chosen = list(comma_items(precisions, "--precisions", PRECISIONS))
    kinds = list(comma_items(input_kinds, "--inputs", INPUT_KINDS))
    batches, seqs = list(comma_ints(batch_sizes, "--batch-sizes")), list(comma_ints(seq_lens, "--seq-lens"))
    chosen_runtimes = comma_items(runtimes, "--runtimes", RUNTIMES)
    env = fid.environment()
    tolerances = fid.Tolerances(min_cosine=min_cosine, min_top1=min_top1)
    every: list[FidelityRecord] = []
    with _ready_client(serve, repository, url, protocol, timeout, retries) as client:
        for name in names:
            ref = OnnxReference(reference or reference_onnx_path(repository, name))
            tok = load_tokenizer_file(tokenizer or find_tokenizer(repository, name))
            records = [
                record
                for runtime in chosen_runtimes
                for record in fid.run_fidelity(client, ref, tok, name, chosen, batches, seqs, kinds, cast(Dataset, dataset), runtime, requests, concurrency, seed)
            ]
            path = fid.write_results(records, fid.results_dir(out, env) / f"fidelity_{name}.json", env)
            _echo_fidelity(records, path, tolerances)
            every += records
    if not no_check:
        fid.raise_on_mismatch(every, tolerances)


def _echo_fidelity(records: list[FidelityRecord], path: Path, tolerances: Any) -> None:
    """Every case and output's metrics, where random ids and real text disagree on NaN/Inf rates, then the
    verdict per precision and the file."""
    from client import fidelity as fid

    click.echo(fid.format_table(records))
    gaps = fid.random_vs_text(records)
    if gaps:
        click.echo("\nRandom ids vs real text (NaN/Inf rates)\n" + fid.format_random_vs_text(gaps))
    click.echo("\n" + fid.format_summary(records, path, tolerances))


@cli.command()
@list_option("--models", required=True, help="Short model names of checkpoints with a classification head.")
@list_option("--precisions", default="fp32,fp16,hybrid", choices=PRECISIONS)
@click.option(
    "--dataset",
    type=click.Choice(["shipped", "hub"]),
    default="shipped",
    show_default=True,
    help="shipped: data/sentiment.tsv; hub: GLUE SST-2 validation via `datasets`.",
)
@list_option("--runtimes", default=DEFAULT_RUNTIME, choices=RUNTIMES)
@list_option("--seq-lens", default="128", help="Tokens per sentence, truncated and padded (one length).")
@click.option("--repository", type=click.Path(path_type=Path), default=DEFAULT_REPOSITORY, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("results"), show_default=True, help="Results root: OUT/<device>/.")
@click.option("--serve", is_flag=True, help="Start a server on --repository (free ports) for this run, stop it after.")
@server_options
def task(
    models: str,
    precisions: str,
    dataset: str,
    runtimes: str,
    seq_lens: str,
    repository: Path,
    out: Path,
    serve: bool,
    url: str | None,
    protocol: str,
    timeout: float,
    retries: int,
) -> None:
    """Task accuracy of each precision on a labelled sentiment set, and agreement with fp32; OUT/<device>/task_<model>.json."""
    import json

    from client import fidelity as fid
    from client.inputs import load_sentiment
    from client.task import task_accuracy
    from toolkit.models.tokenizers import load_tokenizer_file
    from toolkit.repository.lookup import find_tokenizer

    chosen = list(comma_items(precisions, "--precisions", PRECISIONS))
    chosen_runtimes = comma_items(runtimes, "--runtimes", RUNTIMES)
    seq = int(one_item(seq_lens, "--seq-lens", "every sentence is padded to one length"))
    labelled = load_sentiment(dataset)  # type: ignore[arg-type]
    with _ready_client(serve, repository, url, protocol, timeout, retries) as client:
        for model in comma_items(models, "--models"):
            tokenizer = load_tokenizer_file(find_tokenizer(repository, model))
            records = [r for runtime in chosen_runtimes for r in task_accuracy(client, tokenizer, model, labelled, chosen, runtime, seq)]
            path = fid.results_dir(out, fid.environment()) / f"task_{model}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps([record.as_dict() for record in records], indent=2))
            for record in records:
                click.echo(
                    f"{record.model} {record.precision} {record.runtime}: accuracy {record.accuracy:.3f}, agreement with fp32 "
                    f"{record.agreement_with_fp32:.3f}, NaN rows {record.nan_rows} ({record.examples} examples)"
                )
            click.echo(f"wrote {path}")


@contextmanager
def _ready_client(serve: bool, repository: Path, url: str | None, protocol: str, timeout: float, retries: int) -> Iterator[Any]:
    """A client of a ready server: with ``serve``, one started on ``repository`` for the block; else the one at ``url``."""
    with ExitStack() as stack:
        if serve:
            from toolkit.serving import running_server

            handle = stack.enter_context(running_server(repository, state_dir=Path("build/client_server"), timeout=300))
            url = f"127.0.0.1:{handle.ports.grpc if protocol == 'grpc' else handle.ports.http}"
        client = _client(url, protocol, timeout, retries)
        client.require_ready()
        yield client


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; toolkit and usage errors become one line on stderr and exit status 1 or 2."""
    try:
        result = cli.main(args=argv, prog_name="python -m client", standalone_mode=False)
    except ToolkitError as error:
        click.echo(f"error: {error}", err=True)
        return 1
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()}", err=True)
        return error.exit_code
    except click.Abort:
        click.echo("error: aborted", err=True)
        return 130
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
