"""The ``auto`` precision in the build: a policy file becomes the searched graph, recorded in the manifest; a
policy that does not fit the model, or ``--policy`` without ``auto``, fails before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from precision_cases import Case

from toolkit.build import BuildRequest, build_model
from toolkit.errors import BadInputError
from toolkit.measurement.compare import cosine_rows
from toolkit.names import Precision
from toolkit.precision.policy import precision_census
from toolkit.precision.policy_file import PolicyNode, graph_from_policy, write_policy
from toolkit.precision.search import SearchResult
from toolkit.repository.configs import ServingOptions
from toolkit.repository.lookup import read_manifest, require_engine_file
from toolkit.runtimes.onnxruntime import run_onnx

ROOT = Path(__file__).resolve().parents[2]


def _request(policy: Path) -> BuildRequest:
    """The outlier case of ``conftest`` (MiniLM, 2 layers, 30000 in one channel) as a build of fp32 and auto."""
    return BuildRequest(
        model="minilm",
        name="outlier",
        layers=2,
        outlier=30000.0,
        precisions=(Precision.FP32, Precision.AUTO),
        policy=str(policy),
        runtimes=("onnxruntime",),
        serving=ServingOptions(gpu=False),
    )


def test_auto_build_ships_the_searched_graph_and_holds_the_bar_when_given_the_policy_file(
    outlier: Case, outlier_search: SearchResult, tmp_path: Path
) -> None:
    policy_path = write_policy(outlier_search.policy, tmp_path / "outlier.policy.json")
    repository = tmp_path / "repo"
    build_model(_request(policy_path), repository, tmp_path / "work", log=lambda line: None)

    manifest = read_manifest(repository, "outlier")
    assert manifest is not None
    recorded = manifest["policy"]["auto"]
    assert recorded["name"] == outlier_search.policy.name and recorded["searched_on_this_export"] is True
    assert len(recorded["nodes"]) == len(outlier_search.policy.nodes) > 0
    expected = precision_census(graph_from_policy(outlier.graph, outlier_search.policy))
    assert manifest["variants"]["auto"]["node_precisions"] == expected

    inputs = {key: value for key, value in outlier.text.batches[0].items()}
    fp32 = run_onnx(require_engine_file(repository, "outlier", "fp32"), inputs)["last_hidden_state"]
    auto = run_onnx(require_engine_file(repository, "outlier", "auto"), inputs)["last_hidden_state"]
    assert np.isfinite(auto).all()
    rows = inputs["attention_mask"].astype(bool)
    assert float(cosine_rows(fp32[rows], auto[rows]).min()) >= outlier_search.policy.bar.min_cosine


def test_auto_build_fails_naming_the_absent_nodes_when_the_policy_was_searched_on_another_model(
    outlier_search: SearchResult, tmp_path: Path
) -> None:
    ghost = PolicyNode("/module/encoder/layer.5/Add_1", "Add", "layer.5", ())
    policy_path = write_policy(replace(outlier_search.policy, nodes=(*outlier_search.policy.nodes, ghost)), tmp_path / "p.json")
    repository = tmp_path / "repo"
    with pytest.raises(BadInputError, match=r"1 nodes absent from the graph: /module/encoder/layer\.5/Add_1"):
        build_model(_request(policy_path), repository, tmp_path / "work", log=lambda line: None)
    assert read_manifest(repository, "outlier") is None


def test_build_cli_refuses_policy_without_auto_precision(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"schema_version": 1}))
    done = subprocess.run(
        [sys.executable, str(ROOT / "build_engines.py"), "--precisions", "fp32,fp16", "--policy", str(policy), "--repository", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 2
    assert "--policy" in done.stderr and "add auto" in done.stderr
