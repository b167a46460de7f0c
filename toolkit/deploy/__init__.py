"""Deployments of the served repository: Kubernetes manifests for NVIDIA's Triton container (``deploy/k8s/``)."""

from toolkit.deploy.k8s import K8sParameters, manifests_from_overlay, overlay_from_parameters, render

__all__ = ["K8sParameters", "manifests_from_overlay", "overlay_from_parameters", "render"]
