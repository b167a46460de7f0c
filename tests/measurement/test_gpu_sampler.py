"""The GPU sampler: per-GPU summaries from readings; nothing on a machine without a GPU."""

from __future__ import annotations

from toolkit.environment import gpu_present
from toolkit.measurement.gpu_sampler import GpuSampler, sampled_gpus, wait_for_first_sample


def test_summary_gives_mean_and_peak_per_gpu_from_its_samples() -> None:
    sampler = GpuSampler()
    sampler.samples = [{0: (50.0, 1000.0), 1: (10.0, 500.0)}, {0: (100.0, 1200.0), 1: (30.0, 400.0)}]
    assert sampler.summary() == {
        "0": {"util_mean": 75.0, "util_max": 100.0, "memory_max_mib": 1200.0, "samples": 2},
        "1": {"util_mean": 20.0, "util_max": 30.0, "memory_max_mib": 500.0, "samples": 2},
    }


def test_sampled_gpus_is_empty_without_a_gpu_and_samples_every_gpu_with_one() -> None:
    with sampled_gpus(interval=0.05) as sampler:
        took = wait_for_first_sample(sampler, timeout=5.0)
    if gpu_present():
        assert took and sampler.summary() and all(0 <= gpu["util_max"] <= 100 for gpu in sampler.summary().values())
    else:
        assert not took and sampler.samples == [] and sampler.summary() == {}
