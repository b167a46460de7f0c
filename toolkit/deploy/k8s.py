"""Render the Kubernetes deployment of NVIDIA's Triton container (``deploy/k8s/``) for one set of parameters.

kustomize has no templating: ``deploy/k8s/base`` is a complete kustomization, and :func:`overlay_from_parameters`
writes an overlay beside the rendered output (``build/k8s/kustomization.yaml``) that sets the image tag, the
replica count, the repository URL and the optional components; :func:`manifests_from_overlay` runs
``kubectl kustomize`` on it. The overlay is what ``kubectl apply -k build/k8s`` deploys.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import BadInputError, DependencyMissingError, ToolkitError
from toolkit.serving.server import DOCKER_IMAGE

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BASE_DIR = DEPLOY_DIR / "base"
COMPONENTS_DIR = DEPLOY_DIR / "components"
BASE_IMAGE, DEFAULT_IMAGE_TAG = DOCKER_IMAGE.rsplit(":", 1)
HPA_METRICS = ("cpu", "queue-time")  # queue-time: the hpa-queue-time component (needs prometheus-adapter)
DEFAULT_MAX_REPLICAS = 4
# Docker's rule for a tag; a Kubernetes name (RFC 1123 label) for a namespace.
IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class K8sParameters:
    """What ``make k8s`` varies; everything else is in ``deploy/k8s/base``."""

    repository: str
    image_tag: str = DEFAULT_IMAGE_TAG
    replicas: int = 1
    max_replicas: int | None = None  # default: the larger of replicas and DEFAULT_MAX_REPLICAS
    image: str = BASE_IMAGE  # a derived image (deploy/k8s/Dockerfile) with tokenizers already installed
    namespace: str | None = None
    pod_monitor: bool = False
    hpa_metric: str = "cpu"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"s3://[^/\s]+(/\S*)?", self.repository):
            raise BadInputError(
                f"repository {self.repository!r}: the deployment serves a repository on S3, s3://bucket/path or "
                "s3://host:port/bucket/path (make k8s REPOSITORY=s3://...)"
            )
        if not IMAGE_TAG.fullmatch(self.image_tag):
            raise BadInputError(f"image tag {self.image_tag!r} is not a valid image tag, e.g. 24.10-py3 (IMAGE_TAG=)")
        if self.replicas < 1:
            raise BadInputError(f"replicas={self.replicas}: need at least 1 (REPLICAS=)")
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise BadInputError(f"max_replicas={self.max_replicas} is below replicas={self.replicas}: raise MAX_REPLICAS=")
        if self.namespace is not None and not NAMESPACE.fullmatch(self.namespace):
            raise BadInputError(f"namespace {self.namespace!r}: lowercase letters, digits and '-', at most 63 (NAMESPACE=)")
        if self.hpa_metric not in HPA_METRICS:
            raise BadInputError(f"hpa metric {self.hpa_metric!r}: choose one of {', '.join(HPA_METRICS)} (HPA_METRIC=)")

    @property
    def hpa_max_replicas(self) -> int:
        return self.max_replicas if self.max_replicas is not None else max(self.replicas, DEFAULT_MAX_REPLICAS)


def overlay_from_parameters(parameters: K8sParameters, out_dir: Path) -> Path:
    """Write ``out_dir/kustomization.yaml``, an overlay of ``deploy/k8s/base`` for ``parameters``; returns its path.

    JSON is YAML, so the overlay is written with ``json`` and needs no YAML library.
    """
    out_dir.mkdir(parents=True, exist_ok=True)

    def relative(path: Path) -> str:
        return os.path.relpath(path, out_dir.resolve())

    components = [COMPONENTS_DIR / "podmonitor"] if parameters.pod_monitor else []
    if parameters.hpa_metric == "queue-time":
        components.append(COMPONENTS_DIR / "hpa-queue-time")
    hpa_bounds = [
        {"op": "replace", "path": "/spec/minReplicas", "value": parameters.replicas},
        {"op": "replace", "path": "/spec/maxReplicas", "value": parameters.hpa_max_replicas},
    ]
    overlay: dict[str, object] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [relative(BASE_DIR)],
        "components": [relative(component) for component in components],
        "images": [{"name": BASE_IMAGE, "newName": parameters.image, "newTag": parameters.image_tag}],
        "replicas": [{"name": "triton", "count": parameters.replicas}],
        "configMapGenerator": [{"name": "triton-repository", "behavior": "replace", "literals": [f"REPOSITORY={parameters.repository}"]}],
        # The autoscaler owns the replica count once running: it starts from the same number.
        "patches": [{"target": {"kind": "HorizontalPodAutoscaler", "name": "triton"}, "patch": json.dumps(hpa_bounds)}],
    }
    if parameters.namespace:
        overlay["namespace"] = parameters.namespace
    path = out_dir / "kustomization.yaml"
    path.write_text(
        "# Written by `make k8s` (toolkit/deploy/k8s.py); deploy with `kubectl apply -k` on this folder.\n"
        + json.dumps(overlay, indent=2)
        + "\n"
    )
    return path


def kubectl() -> str:
    """Path of ``kubectl``, or DependencyMissingError with where to get it."""
    found = shutil.which("kubectl")
    if found is None:
        raise DependencyMissingError("rendering needs kubectl (1.27+, with kustomize built in): https://kubernetes.io/docs/tasks/tools/")
    return found


def manifests_from_overlay(overlay_dir: Path) -> str:
    """``kubectl kustomize overlay_dir``: every object as multi-document YAML."""
    result = subprocess.run([kubectl(), "kustomize", str(overlay_dir)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolkitError(f"kubectl kustomize {overlay_dir} failed: {result.stderr.strip()}")
    return result.stdout


def render(parameters: K8sParameters, out_dir: Path) -> Path:
    """Overlay and rendered manifests (``out_dir/manifests.yaml``) for ``parameters``; returns the manifests' path."""
    overlay_from_parameters(parameters, out_dir)
    manifests = out_dir / "manifests.yaml"
    manifests.write_text(manifests_from_overlay(out_dir))
    return manifests
