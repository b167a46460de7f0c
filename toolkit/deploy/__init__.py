"""Deployments of the served repository: Kubernetes manifests for NVIDIA's Triton container (``deploy/k8s/``).

The names below load ``toolkit.deploy.k8s`` on first use, so ``python -m toolkit.deploy`` starts without numpy
and can report a missing package in one line (``toolkit.cli.run_main``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from toolkit.cli import lazy_exports

if TYPE_CHECKING:
    from toolkit.deploy.k8s import K8sParameters, manifests_from_overlay, overlay_from_parameters, render

__all__ = ["K8sParameters", "manifests_from_overlay", "overlay_from_parameters", "render"]


__getattr__ = lazy_exports(__name__, "toolkit.deploy.k8s", __all__)
