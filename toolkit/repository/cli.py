"""``python -m toolkit.repository push``: a thin CLI over ``toolkit.repository.object_store``."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli import CONTEXT_SETTINGS
from toolkit.errors import ToolkitError


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """Work with a built Triton model repository."""


@main.command()
@click.option(
    "--to",
    "url",
    required=True,
    help="s3://bucket/path (AWS), or s3://host:port/bucket/path for an S3-compatible server such as MinIO; "
    "credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (or AWS_PROFILE).",
)
@click.option(
    "--repository",
    default=Path("model_repository"),
    show_default=True,
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="The local repository to upload (manifests included).",
)
@click.option("--keep", default=2, show_default=True, type=click.IntRange(min=1), help="Published versions kept per model, the new one included.")
@click.option("--force", is_flag=True, help="Publish a new version of models that did not change, too.")
def push(url: str, repository: Path, keep: int, force: bool) -> None:
    """Upload the repository so that servers polling the bucket switch each model whole: files under a new
    version folder first, then the model's config naming that version, ensembles last."""
    from toolkit.repository.object_store import push_repository

    try:
        pushed = push_repository(repository, url, keep=keep, force=force, log=click.echo)
    except ToolkitError as error:
        raise click.ClickException(str(error)) from error
    published = sum(1 for model in pushed if model.version is not None)
    click.echo(f"{url}: {published} of {len(pushed)} models published, {len(pushed) - published} unchanged")

