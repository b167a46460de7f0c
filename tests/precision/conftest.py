"""The outlier model (MiniLM, 2 real layers, 30000 planted in one embedding channel), its export, its data,
its FP16 report and its policy search, made once for the precision tests."""

from __future__ import annotations

import pytest
from precision_cases import Case, make_case

from toolkit.models.loading import load_model
from toolkit.models.stress import add_outlier_channel
from toolkit.precision.inspect import PrecisionReport, precision_report
from toolkit.precision.search import SearchResult, search_policy


@pytest.fixture(scope="session")
def outlier(tmp_path_factory: pytest.TempPathFactory) -> Case:
    model = add_outlier_channel(load_model("minilm", name="outlier", config_overrides={"num_hidden_layers": 2}), 30000.0)
    return make_case(model, tmp_path_factory.mktemp("outlier"))


@pytest.fixture(scope="session")
def outlier_report(outlier: Case) -> PrecisionReport:
    return precision_report(outlier.graph, [outlier.text, outlier.random], model_name="outlier")


@pytest.fixture(scope="session")
def outlier_search(outlier: Case, outlier_report: PrecisionReport) -> SearchResult:
    return search_policy(outlier.graph, outlier.text, report=outlier_report, model_name="outlier")
