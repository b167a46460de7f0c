"""Per-GPU utilisation and memory while something runs: NVML (``pynvml``, from ``nvidia-ml-py``) sampled in a
thread, else ``nvidia-smi``; nothing on a machine without an NVIDIA GPU."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from toolkit.environment import nvidia_smi_query

Sample = dict[int, tuple[float, float]]  # GPU index -> (utilisation %, memory used MiB)


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # no package or no driver
        return None


def sample_gpus(nvml: Any | None) -> Sample:
    """One reading of every GPU: utilisation in percent and memory in use in MiB."""
    if nvml is not None:
        readings = {}
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            utilisation = nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            readings[index] = (float(utilisation), float(nvml.nvmlDeviceGetMemoryInfo(handle).used) / (1024 * 1024))
        return readings
    rows = nvidia_smi_query("index,utilization.gpu,memory.used") or []
    return {int(row[0]): (float(row[1]), float(row[2])) for row in rows if len(row) == 3 and row[0].isdigit()}


class GpuSampler:
    """Samples every GPU each ``interval`` seconds between ``start`` and ``stop``; ``summary`` gives per GPU the mean
    and peak utilisation and the peak memory. Empty on a machine without a GPU."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        nvml = _nvml()
        if nvml is None and nvidia_smi_query("index") is None:
            return
        self._thread = threading.Thread(target=self._run, args=(nvml,), daemon=True)
        self._thread.start()

    def _run(self, nvml: Any | None) -> None:
        while not self._stop.is_set():
            self.samples.append(sample_gpus(nvml))
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self) -> dict[str, dict[str, float]]:
        """{"<index>": {"util_mean", "util_max", "memory_max_mib", "samples"}} over the samples taken."""
        per_gpu: dict[int, list[tuple[float, float]]] = {}
        for sample in self.samples:
            for index, reading in sample.items():
                per_gpu.setdefault(index, []).append(reading)
        return {
            str(index): {
                "util_mean": round(sum(u for u, _ in readings) / len(readings), 1),
                "util_max": max(u for u, _ in readings),
                "memory_max_mib": max(m for _, m in readings),
                "samples": len(readings),
            }
            for index, readings in sorted(per_gpu.items())
        }


@contextmanager
def sampled_gpus(interval: float = 0.5) -> Iterator[GpuSampler]:
    """A running :class:`GpuSampler` for the ``with`` block, stopped after it (read ``summary()`` then)."""
    sampler = GpuSampler(interval)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()


def wait_for_first_sample(sampler: GpuSampler, timeout: float = 2.0) -> bool:
    """Whether the sampler has taken a reading within ``timeout`` seconds (tests)."""
    deadline = time.monotonic() + timeout
    while not sampler.samples and time.monotonic() < deadline:
        time.sleep(0.05)
    return bool(sampler.samples)
