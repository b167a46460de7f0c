"""What ties a perf record to a build: the hashes of the repository's build manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def build_manifests(repository: Path | None) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every ``manifest.json`` in the repository, by relative path."""
    if repository is None or not Path(repository).is_dir():
        return {}
    found = (
        sorted(Path(repository).glob("manifest.json"))
        + sorted(Path(repository).glob("*/manifest.json"))
        + sorted(Path(repository).glob("*/*/manifest.json"))
    )
    return {str(p.relative_to(repository)): hashlib.sha256(p.read_bytes()).hexdigest()[:16] for p in found}


def manifest_hash(repository: Path | None) -> str | None:
    """One hash over all manifests of the repository, or None when it has none."""
    manifests = build_manifests(repository)
    if not manifests:
        return None
    return hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()[:16]
