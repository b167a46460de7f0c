"""Zero-argument factories of PyTorch models for ``python -m perf engine --torch-factory perf.torch_models:NAME``.

Each returns the exact module the build exports (same weights for ``minilm``, same architecture and seeded
random weights for the others), so PyTorch eager and the engines time the same computation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def _module(spec: str, random_weights: bool) -> torch.nn.Module:
    from toolkit.models.export import torch_module
    from toolkit.models.loading import load_model

    return torch_module(load_model(spec, random_weights=random_weights))


def minilm() -> torch.nn.Module:
    """all-MiniLM-L6-v2 with its real weights."""
    return _module("minilm", random_weights=False)


def bert_base_uncased() -> torch.nn.Module:
    """bert-base-uncased's architecture, seeded random weights."""
    return _module("bert-base-uncased", random_weights=True)


def gpt2() -> torch.nn.Module:
    """GPT-2 (124M) architecture, seeded random weights."""
    return _module("gpt2", random_weights=True)
