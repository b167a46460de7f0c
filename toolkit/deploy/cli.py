"""``python -m toolkit.deploy k8s``: a thin CLI over toolkit.deploy.k8s (``make k8s`` calls it)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from toolkit.cli import CONTEXT_SETTINGS
from toolkit.deploy.k8s import BASE_IMAGE, DEFAULT_IMAGE_TAG, HPA_METRICS, K8sParameters, render
from toolkit.errors import ToolkitError


@click.group(context_settings=CONTEXT_SETTINGS)
def main() -> None:
    """Deployments of the model repository."""


@main.command()
@click.option("--repository", required=True, help="Model repository on S3: s3://bucket/path or s3://host:port/bucket/path.")
@click.option("--image-tag", default=DEFAULT_IMAGE_TAG, show_default=True, help="Tag of NVIDIA's tritonserver image.")
@click.option("--replicas", default=1, show_default=True, type=int, help="Pods to start with; the autoscaler's minimum.")
@click.option("--max-replicas", type=int, help="The autoscaler's maximum (default: the larger of --replicas and 4).")
@click.option("--image", help="Another image name, e.g. one built from deploy/k8s/Dockerfile (default: NVIDIA's).")
@click.option("--namespace", help="Namespace for every object (default: the one kubectl apply uses).")
@click.option("--pod-monitor/--no-pod-monitor", default=False, show_default=True, help="Add prometheus-operator's PodMonitor.")
@click.option("--hpa-metric", type=click.Choice(HPA_METRICS), default="cpu", show_default=True, help="What the autoscaler follows.")
@click.option(
    "--out", default=Path("build/k8s"), show_default=True, type=click.Path(path_type=Path), help="Folder for the overlay and manifests."
)
def k8s(
    repository: str,
    image_tag: str,
    replicas: int,
    max_replicas: int | None,
    image: str | None,
    namespace: str | None,
    pod_monitor: bool,
    hpa_metric: str,
    out: Path,
) -> None:
    """Write the kustomize overlay and the rendered manifests for a cluster; deploy with `kubectl apply -k OUT`."""
    try:
        parameters = K8sParameters(repository, image_tag, replicas, max_replicas, image or BASE_IMAGE, namespace, pod_monitor, hpa_metric)
        manifests = render(parameters, out)
    except ToolkitError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    click.echo(f"{manifests} ({out / 'kustomization.yaml'} deploys with: kubectl apply -k {out})")

