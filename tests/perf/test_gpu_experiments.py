"""scripts/gpu_experiments.py writes its record as a perf.records.Experiments, after each experiment."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from perf.records import SCHEMA_VERSION, Experiments

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_experiments.py"


def _script(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_experiments", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_experiments_record_keeps_each_result_and_a_failure_when_one_experiment_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = _script(monkeypatch)
    for name in ("find_tokenizer", "require_engine_file"):
        monkeypatch.setattr(script, name, lambda *args, **kwargs: tmp_path)  # no repository: the experiments below read none
    monkeypatch.setattr(script, "engine_input_names", lambda *args: ("input_ids",))

    def broken(subject: object) -> None:
        raise RuntimeError("no GPU")

    monkeypatch.setattr(script, "EXPERIMENTS", {"tokenizer": lambda subject: {"tokens": 128}, "kernel_profile": broken})
    result = CliRunner().invoke(script.main, ["--models", "m", "--out", str(tmp_path), "--experiments", "tokenizer,kernel_profile"])
    assert result.exit_code == 0, result.output
    (path,) = tmp_path.rglob("experiments_m.json")
    stored = json.loads(path.read_text())
    assert stored["schema"] == SCHEMA_VERSION and stored["tokenizer"] == {"tokens": 128}
    record = Experiments.from_json(stored)
    assert record.results["kernel_profile"] == {"status": "failed: RuntimeError: no GPU"} and record.kernel_profiles() == []


def test_idle_gap_times_the_served_encoder_after_each_gap_and_says_why_the_engine_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.models.tokenizers import minilm_folder

    script = _script(monkeypatch)
    monkeypatch.setattr(script, "ort_providers", lambda: ["CPUExecutionProvider"])
    subject = script.Subject(tmp_path, "minilm", {}, minilm_folder() / "tokenizer.json", ["input_ids"])
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    result = script.idle_gap(subject, runs=3)
    for name in ("tokenize and pack one text", "encode one text in the calling thread (Tokenizer.encode)", "encode one text, batch call without the thread pool"):
        medians = result[name]
        assert len(medians) == len(script.IDLE_GAPS_MS) == len(result["gaps_ms"]) and all(m > 0 for m in medians)
    assert os.environ.get("TOKENIZERS_PARALLELISM") == before  # the experiment gives the setting back
    assert result["engine"].startswith("not timed: no CUDA provider")
