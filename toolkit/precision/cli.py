"""``python -m toolkit.precision inspect|search``: thin click commands over ``toolkit.precision.workflow``.

python -m toolkit.precision inspect --models minilm --layers 2 --outlier 30000
python -m toolkit.precision search --models gpt2 --random-weights --texts my_texts.txt --policy-out gpt2.policy.json
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from toolkit.cli import CONTEXT_SETTINGS, list_option
from toolkit.cli_values import comma_ints, one_item
from toolkit.errors import BadInputError, ToolkitError

CONTEXT = {**CONTEXT_SETTINGS, "show_default": True}


def _model_options(command: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        list_option(
            "--models",
            default="minilm",
            help="The model (one per run): 'minilm' (real MiniLM-L6, offline), a hub id (bert-base-uncased, gpt2, ...) or a local folder.",
        ),
        click.option("--name", default=None, help="Short name for the output folder and records (default: derived from --models)."),
        click.option(
            "--random-weights",
            is_flag=True,
            help="Build the architecture from its config with seeded random weights (offline for gpt2, bert-base-uncased).",
        ),
        click.option("--layers", type=click.IntRange(min=1), default=None, help="Keep only this many transformer layers."),
        click.option(
            "--outlier",
            type=float,
            default=0.0,
            help="Plant this value in one channel of each BERT embedding table (e.g. 30000 overflows FP16).",
        ),
        click.option(
            "--texts",
            type=click.Path(path_type=Path, dir_okay=False),
            default=None,
            help="UTF-8 file, one text per line (default: the shipped data/corpus.txt).",
        ),
        list_option("--batch-sizes", default="4", help="Rows per batch (one number)."),
        list_option("--seq-lens", default="64", help="Tokens per row, text rows packed from consecutive lines (one length)."),
        click.option("--batches", type=click.IntRange(min=1), default=2, help="Batches of each data set."),
        click.option("--random-ids", default=None, help="Range LOW:HIGH of the random ids (default: 1000:vocabulary size)."),
        click.option(
            "--out",
            type=click.Path(path_type=Path, file_okay=False),
            default=None,
            help="Folder for the JSON and PNG (default: build/precision/<name>/).",
        ),
        click.option(
            "--native",
            is_flag=True,
            help="Run FP16 as ONNX Runtime's CPU provider does (keeps some FP16 values in FP32) instead of emulating the GPU's FP16 storage.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _choices(models: str, name: str | None, random_weights: bool, layers: int | None, outlier: float, texts: Path | None,
             batch_sizes: str, seq_lens: str, batches: int, random_ids: str | None) -> tuple[Any, Any]:  # fmt: skip
    from toolkit.precision.data import read_texts
    from toolkit.precision.workflow import DataChoice, ModelChoice

    model = one_item(models, "--models", "a report and a policy name one export's nodes: run once per model")
    batch_size = comma_ints(one_item(batch_sizes, "--batch-sizes", "the data sets have one shape"), "--batch-sizes")[0]
    seq_len = comma_ints(one_item(seq_lens, "--seq-lens", "the data sets have one shape"), "--seq-lens")[0]
    if texts is not None:
        read_texts(texts)  # an unusable file fails before the model loads
    id_range = None
    if random_ids is not None:
        low, sep, high = random_ids.partition(":")
        if not sep or not low.strip().isdigit() or not high.strip().isdigit():
            raise BadInputError(f"--random-ids {random_ids!r}: expected LOW:HIGH, e.g. 1000:30522")
        id_range = (int(low), int(high))
    return ModelChoice(model, random_weights, layers, outlier, name), DataChoice(texts, batch_size, seq_len, batches, id_range)


@click.group(context_settings=CONTEXT)
def cli() -> None:
    """Where FP16 breaks a model (inspect), and the cheapest mixed precision that holds (search)."""


@cli.command(context_settings=CONTEXT)
@_model_options
@click.option("--threshold", type=float, default=0.999, help="A node diverges when some row's cosine against FP32 falls below this.")
def inspect(out: Path | None, native: bool, threshold: float, **options: Any) -> None:
    """Run FP32 and FP16 with every intermediate exposed, on text and random ids: per block and node, headroom,
    error and NaN/Inf, and the first node that breaks. Writes report.json and report.png."""
    from toolkit.precision.report_views import format_report
    from toolkit.precision.workflow import inspect_model

    model, data = _choices(**options)
    with _clamps_said():
        report, written = inspect_model(model, data, out, threshold, emulate=not native)
    click.echo(format_report(report))
    click.echo("wrote " + ", ".join(str(path) for path in written))


@cli.command(context_settings=CONTEXT)
@_model_options
@click.option("--min-cosine", type=float, default=0.9998, help="Bar: worst-row cosine of every output against FP32.")
@click.option("--min-top1", type=float, default=0.99, help="Bar: top-1 agreement of next-token logits (GPT-2 families).")
@click.option("--max-evaluations", type=click.IntRange(min=2), default=40, help="Candidates judged at most.")
@click.option(
    "--policy-out", type=click.Path(path_type=Path, dir_okay=False), default=None, help="Policy file to write (default: <out>/policy.json)."
)
@click.option(
    "--baseline/--no-baseline", default=True, help="Also run onnxconverter-common's auto_convert_mixed_precision on the same data and bar."
)
def search(
    out: Path | None,
    native: bool,
    min_cosine: float,
    min_top1: float,
    max_evaluations: int,
    policy_out: Path | None,
    baseline: bool,
    **options: Any,
) -> None:
    """Find the fewest FP32 nodes that meet the bar on text; write the policy file and the result table
    (fp16 / hybrid / auto / auto_convert_mixed_precision)."""
    from toolkit.precision.policy_file import PolicyBar
    from toolkit.precision.report_views import format_report
    from toolkit.precision.variants import format_rows
    from toolkit.precision.workflow import search_model

    model, data = _choices(**options)
    bar = PolicyBar(min_cosine=min_cosine, min_top1=min_top1)
    with _clamps_said():
        result, rows, written = search_model(model, data, bar, out, policy_out, max_evaluations, baseline, emulate=not native)
    click.echo(format_report(result.report))
    click.echo(format_rows(rows))
    policy = result.policy
    click.echo(
        f"policy {policy.name}: {len(policy.nodes)} FP32 nodes ({', '.join(policy.node_names[:8])}{'...' if len(policy.nodes) > 8 else ''}); {policy.message}"
    )
    click.echo("wrote " + ", ".join(str(path) for path in written))
    if not policy.met:
        sys.exit(1)


@contextmanager
def _clamps_said() -> Iterator[None]:
    """The converter's one warning per clamped weight (repeated for every candidate graph) as one line."""
    from toolkit.precision.policy import counted_clamps

    with counted_clamps() as clamps:
        yield
    if clamps.count:
        click.echo(f"note: FP16 conversions clamped {clamps.count} tiny weights to +-1e-7 (largest absolute change {clamps.largest_absolute_change:.1g})")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; toolkit and usage errors become one line ``error: ...`` on stderr and exit status 2."""
    try:
        cli.main(args=argv, prog_name="python -m toolkit.precision", standalone_mode=False)
    except ToolkitError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except click.ClickException as error:
        click.echo(f"error: {error.format_message()}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
