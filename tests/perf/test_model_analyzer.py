"""Triton Model Analyzer on the tiny repository: the config we write, read by Model Analyzer's own loader, and
one real profile of the engine model through ``python -m perf analyze``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_repo import NAME

from perf.cli import main as perf_cli
from perf.model_analyzer import AnalyzerRequest, profiled_inputs, write_model_analyzer_config
from toolkit.errors import BadInputError
from toolkit.names import ATTENTION_MASK, INPUT_IDS, TEXT, TOKEN_TYPE_IDS
from toolkit.repository.naming import engine_model, ensemble_model

model_analyzer = pytest.importorskip("model_analyzer", reason="Triton Model Analyzer is not installed: pip install triton-model-analyzer==1.58.0")

SEQ = 16  # within the tiny engine's 64 positions


def _load_with_model_analyzer(config: Path) -> object:
    """Model Analyzer's own CLI and profile-config loader, as ``model-analyzer profile -f config`` runs them."""
    from model_analyzer.cli.cli import CLI
    from model_analyzer.config.input.config_command_profile import ConfigCommandProfile

    cli = CLI()
    cli.add_subcommand(cmd="profile", help="profile", config=ConfigCommandProfile())
    _, loaded = cli.parse(["profile", "-f", str(config)])
    return loaded


@pytest.mark.parametrize("model", [engine_model(NAME, "fp32"), ensemble_model(NAME, "fp32")], ids=["engine", "ensemble"])
def test_model_analyzer_config_loads_with_model_analyzers_loader_when_rendered(tiny_repository: Path, tmp_path: Path, model: str) -> None:
    request = AnalyzerRequest(model=model, repository=tiny_repository, out_dir=tmp_path / "ma", seq_len=SEQ, concurrency=(1, 2))
    loaded = _load_with_model_analyzer(write_model_analyzer_config(request))
    assert loaded.triton_launch_mode == "remote"  # type: ignore[attr-defined]
    assert loaded.triton_grpc_endpoint == "127.0.0.1:8101"  # type: ignore[attr-defined]
    assert Path(loaded.perf_analyzer_path).name == "perf_analyzer"  # type: ignore[attr-defined]
    (profiled,) = loaded.profile_models  # type: ignore[attr-defined]
    assert profiled.model_name() == model
    assert profiled.parameters()["concurrency"] == [1, 2]
    data = json.loads(Path(profiled.perf_analyzer_flags()["input-data"]).read_text())["data"]
    if model == ensemble_model(NAME, "fp32"):
        assert set(data[0]) == {TEXT}
    else:
        assert set(data[0]) == {INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS}
        assert data[0][INPUT_IDS]["shape"] == [SEQ]


def test_profiled_inputs_raise_with_the_models_when_model_is_unknown(tiny_repository: Path) -> None:
    with pytest.raises(BadInputError, match=rf"'nope' is not in .* {ensemble_model(NAME, 'fp32')}"):
        profiled_inputs(tiny_repository, "nope")


@pytest.mark.server
@pytest.mark.timeout(400)
def test_perf_analyze_profiles_engine_model_on_its_own_server_when_run_by_hand(tiny_repository: Path, tmp_path: Path) -> None:
    from toolkit.serving.server import free_ports

    out, ports, model = tmp_path / "ma", free_ports(), engine_model(NAME, "fp32")
    flags = ["--models", model, "--repository", str(tiny_repository), "--out", str(out), "--seq-lens", str(SEQ), "--concurrency", "1", "--batch-sizes", "1"]
    ports_flags = ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)]
    result = CliRunner().invoke(perf_cli, ["analyze", *flags, *ports_flags])
    assert result.exit_code == 0, result.output
    with (out / "results" / "results" / "metrics-model-inference.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["Model"], row["Concurrency"]) for row in rows] == [(model, "1")]
    assert float(rows[0]["Throughput (infer/sec)"]) > 0
