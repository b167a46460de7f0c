"""What records say about the code and the machine that made them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from toolkit.environment import code_version, device_folder


def test_code_version_names_toolkit_commit_when_set_even_inside_a_git_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_COMMIT", "abc1234")
    assert code_version() == "abc1234"


def test_code_version_is_git_describe_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_COMMIT", raising=False)
    described = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False).stdout.strip()
    assert code_version() == (described or None)


@pytest.mark.parametrize(
    ("gpu", "cpu", "folder"),
    [
        (None, "Intel(R) Xeon(R) Processor", "cpu-intel-xeon"),  # the folder the issue found named cpu-intel-r-xeon-r-processor
        (None, "Intel(R) Xeon(R) CPU @ 2.20GHz", "cpu-intel-xeon"),  # the clock is not the chip
        (None, "Intel(R) Xeon(R) Platinum 8480+", "cpu-intel-xeon-platinum-8480"),
        (None, "AMD EPYC 7763 64-Core Processor", "cpu-amd-epyc-7763"),  # the core count neither
        (None, "AMD EPYC", "cpu-amd-epyc"),  # this project's CPU machines: results/cpu-amd-epyc/
        ("NVIDIA H100 80GB HBM3", None, "h100"),
        ("NVIDIA H200", None, "h200"),
        ("NVIDIA A100-SXM4-80GB", None, "a100"),
    ],
)
def test_device_folder_names_the_chip_without_trademarks_clocks_or_core_counts(gpu: str | None, cpu: str | None, folder: str) -> None:
    assert device_folder(gpu, cpu) == folder


def test_every_results_folder_is_one_device_folder_could_name() -> None:
    """Stable names: a folder in results/ is either a GPU's model number or a slug without trademark residue."""
    results = Path(__file__).resolve().parents[1] / "results"
    for folder in (path.name for path in results.iterdir() if path.is_dir() and path.name != "plots"):
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", folder), folder
        assert not re.search(r"-(r|tm|cpu|processor)(-|$)", folder), folder
