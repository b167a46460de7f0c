"""Where numbers come from: device name (results folder), driver, CUDA, package versions, build hash."""

from __future__ import annotations

import hashlib
import json
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from toolkit.environment import cpu_name, device_folder, nvidia_smi_query, slug

__all__ = ["build_manifests", "cpu_name", "device_info", "manifest_hash", "slug"]


def _cuda_driver_version() -> str | None:
    try:
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return match.group(1) if match else None


def device_info() -> dict[str, Any]:
    """GPU name, driver and CUDA version (None on a CPU machine), CPU name and core count."""
    import os

    rows = nvidia_smi_query("name,driver_version,memory.total") or []
    gpu = rows[0] if rows else None
    info: dict[str, Any] = {
        "gpu": gpu[0] if gpu else None,
        "gpu_count": len(rows),
        "driver": gpu[1] if gpu else None,
        "gpu_memory_total_mib": float(gpu[2]) if gpu and gpu[2].replace(".", "").isdigit() else None,
        "cuda": _cuda_driver_version() if gpu else None,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "host": platform.node(),
    }
    info["name"] = device_folder(info["gpu"])
    return info


def build_manifests(repository: Path | None) -> dict[str, str]:
    """sha256 (first 16 hex digits) of every ``manifest.json`` in the repository, by relative path.

    The build's manifest format is the lead's: any JSON (or unreadable file) is hashed as bytes.
    """
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
