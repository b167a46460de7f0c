"""What a result depends on besides the code: installed package versions and the NVIDIA GPUs present.

One place for the build manifest, fidelity records and perf records alike.
"""

from __future__ import annotations

import shutil
import subprocess
from importlib import metadata

# Packages whose versions shape builds and numbers; absent ones are left out of records.
PACKAGES = (
    "numpy",
    "torch",
    "transformers",
    "tokenizers",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxconverter-common",
    "tensorrt",
    "tritonclient",
    "nvidia-pytriton",
)


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (absent ones are left out)."""
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def nvidia_smi_query(fields: str) -> list[list[str]] | None:
    """``nvidia-smi --query-gpu=<fields>`` rows (no header, no units), or None without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]


def gpus() -> list[dict[str, str]]:
    """Name and driver of each NVIDIA GPU; empty on a machine without one."""
    return [{"name": row[0], "driver": row[1]} for row in nvidia_smi_query("name,driver_version") or [] if len(row) >= 2]


def gpu_name() -> str | None:
    """``"<name>, <driver>"`` of the first NVIDIA GPU, or None on a machine without one."""
    found = gpus()
    return f"{found[0]['name']}, {found[0]['driver']}" if found else None
