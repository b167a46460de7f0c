"""The PyTorch baseline of a built model: the very module its build exported (``toolkit.models.export``'s wrapper
around the family's forward), with the same weights (or the same seeded random ones), rebuilt from the
model's manifest. PyTorch eager and the engines then time the same computation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.build import model_from_manifest
from toolkit.errors import BadInputError
from toolkit.models.export import torch_module
from toolkit.repository.lookup import read_manifest

if TYPE_CHECKING:
    import torch


def torch_baseline(repository: Path, name: str) -> torch.nn.Module:
    """The exported module of model ``name`` in ``repository``, in eval mode."""
    manifest = read_manifest(repository, name)
    if manifest is None:
        raise BadInputError(f"no manifest of {name!r} in {repository}: the PyTorch baseline is rebuilt from a build's manifest")
    return torch_module(model_from_manifest(manifest))
