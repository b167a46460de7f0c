"""What a result depends on besides the code: installed package versions, the NVIDIA GPUs present, the CPU,
and the code's commit. The one place that detects GPUs, for the build manifest, the client, fidelity and perf
records alike.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

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


def gpu_present() -> bool:
    """Whether an NVIDIA GPU answers ``nvidia-smi`` here."""
    return bool(gpus())


def _cuda_driver_version() -> str | None:
    try:
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    return match.group(1) if match else None


def device_info() -> dict[str, Any]:
    """GPU name, count, driver, memory and CUDA version (None on a CPU machine), CPU name and cores, host, and
    ``name``: the ``results/<name>`` folder of this machine's numbers."""
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


def slug(text: str) -> str:
    """Lower-case folder name: runs of other characters become one dash."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# Words of CPU model names that say nothing about the chip: trademarks, "CPU", "Processor", core counts, clocks.
CPU_NOISE = re.compile(r"\((r|tm)\)|\b(cpu|processor|\d+-core)\b|@.*$", re.IGNORECASE)


def device_folder(gpu: str | None = None, cpu: str | None = None) -> str:
    """The ``results/<folder>`` of this machine's numbers, shared by perf and fidelity records.

    A GPU is named by its model number ("NVIDIA H100 80GB HBM3" -> ``h100``, else the slug of its name);
    a machine without one (``gpu`` None) by its CPU's vendor, family and model number, without trademarks,
    clocks or core counts ("AMD EPYC 7763 64-Core Processor" -> ``cpu-amd-epyc-7763``,
    "Intel(R) Xeon(R) Processor" -> ``cpu-intel-xeon``).
    """
    if gpu is None:
        return slug(f"cpu {CPU_NOISE.sub(' ', cpu or cpu_name())}")
    match = re.search(r"\b([A-Z]+[0-9]+[A-Z]*)\b", gpu.removeprefix("NVIDIA "))
    return match.group(1).lower() if match else slug(gpu)


def code_version() -> str | None:
    """``$TOOLKIT_COMMIT`` when set, else the toolkit's commit (``git describe``, "-dirty" with local
    changes), else None.

    The variable comes first: a GPU machine's copy of the tree can carry a ``.git`` that names an older
    commit than the files it runs (seen there: ``git describe`` gave the session's first commit, "-dirty").
    """
    if os.environ.get("TOOLKIT_COMMIT"):
        return os.environ["TOOLKIT_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        done = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
