"""The serving-config search: coordinate descent over candidates, config edits that restore, and a real run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from perf.load import LOADS
from perf.records import LoadPoint
from perf.tune import Candidate, RepositoryConfigs, Space, search, start_candidate, tune
from toolkit.build import BuildRequest, build_model
from toolkit.errors import BadInputError
from toolkit.names import Precision
from toolkit.repository.configs import ServingOptions, config_from_text
from toolkit.repository.layout import read_configs
from toolkit.serving import ServerOptions, running_server

NAME = "tunemini"


def _level(rate: float, p99: float) -> LoadPoint:
    return LoadPoint.from_fields({
        "run_id": "r", "device": "cpu-x", "model": "m", "precision": "fp32", "path": "ensemble", "triton_model": "m_fp32", "texts": 1,
        "concurrency": 8, "seq_len": 32, "status": "ok", "requests_per_s": rate, "metrics": {"latency_p99": p99},
    })  # fmt: skip


def test_search_keeps_each_knobs_best_value_and_scores_only_levels_within_the_budget() -> None:
    rates = {1: 100.0, 2: 180.0, 4: 240.0}  # tokenizer instances -> requests/s

    def measure(candidate: Candidate) -> list[LoadPoint]:
        p99 = 50.0 if candidate.tokenizer_instances == 4 else 10.0  # four instances: fast but over the budget
        bonus = 1.5 if candidate.engine_instances == 2 else 1.0
        return [_level(rates[candidate.tokenizer_instances] * bonus, p99)]

    space = Space(path=("ensemble",), tokenizer_instances=(1, 2, 4), engine_instances=(1, 2), max_queue_delay_us=(0,))
    best, trials = search(Candidate(), space, measure, p99_ms=20.0, log=lambda _: None)
    assert best.candidate == Candidate(tokenizer_instances=2, engine_instances=2) and best.score(20.0) == 270.0
    assert len(trials) == 4  # the start, 2 and 4 tokenizer instances, then 2 engine instances: each candidate once
    assert Trial_over_budget_scores_zero(trials)


def test_search_gives_every_candidate_the_knobs_given_one_value() -> None:
    """``--paths onehop --tokenizer-threads 4``: the repository's start configuration is not measured as it is."""
    seen: list[Candidate] = []

    def measure(candidate: Candidate) -> list[LoadPoint]:
        seen.append(candidate)
        return [_level(100.0 * candidate.engine_instances, 5.0)]

    space = Space(path=("onehop",), tokenizer_instances=(1,), engine_instances=(1, 2), max_queue_delay_us=(0,), tokenizer_threads=(4,))
    best, _ = search(Candidate(), space, measure, p99_ms=20.0, log=lambda _: None)
    assert seen == [Candidate(path="onehop", tokenizer_threads=4), Candidate(path="onehop", engine_instances=2, tokenizer_threads=4)]
    assert best.candidate == seen[1]


def Trial_over_budget_scores_zero(trials: list[Any]) -> bool:
    return all(t.score(20.0) == 0.0 for t in trials if t.candidate.tokenizer_instances == 4)


def test_search_measures_a_one_hop_configuration_once_whatever_the_tokenizer_instances() -> None:
    """One-hop serves without the tokenizer model: its tokenizer count is not a knob (the H200's first searches
    measured the same one-hop configuration twice, 6,780 and 7,113 requests/s, under two names)."""
    measured: list[Candidate] = []

    def measure(candidate: Candidate) -> list[LoadPoint]:
        measured.append(candidate)
        return [_level(200.0 if candidate.path == "onehop" else 100.0, 10.0)]

    space = Space(path=("ensemble", "onehop"), tokenizer_instances=(4, 6, 8), engine_instances=(2,), max_queue_delay_us=(0,))
    best, trials = search(Candidate(tokenizer_instances=4, engine_instances=2), space, measure, p99_ms=20.0, log=lambda _: None)
    assert best.candidate == Candidate(path="onehop", tokenizer_instances=4, engine_instances=2)
    assert measured == [Candidate(tokenizer_instances=4, engine_instances=2), best.candidate] and len(trials) == 2


def test_confirm_measures_the_two_best_again_and_keeps_the_better_mean() -> None:
    """A lucky first window (A: 300, then 150 and 150) loses to a steady one (B: 250 each time); the rest is
    measured once; the record of each round is kept."""
    rounds: dict[int, list[float]] = {1: [100.0], 2: [300.0, 150.0, 150.0], 4: [250.0, 250.0, 250.0]}  # engine instances

    def measure(candidate: Candidate) -> list[LoadPoint]:
        return [_level(rounds[candidate.engine_instances].pop(0), 10.0)]

    space = Space(path=("ensemble",), tokenizer_instances=(1,), engine_instances=(1, 2, 4), max_queue_delay_us=(0,))
    lucky, steady = Candidate(engine_instances=2), Candidate(engine_instances=4)
    unconfirmed, _ = search(Candidate(), space, measure, p99_ms=20.0, log=lambda _: None)
    assert unconfirmed.candidate == lucky  # measured once each, the lucky window wins
    rounds.update({1: [100.0], 2: [300.0, 150.0, 150.0], 4: [250.0, 250.0, 250.0]})
    best, trials = search(Candidate(), space, measure, p99_ms=20.0, log=lambda _: None, confirm=2)
    assert best.candidate == steady and best.round_scores(20.0) == [250.0, 250.0, 250.0]
    by_candidate = {t.candidate: t for t in trials}
    assert by_candidate[lucky].score(20.0) == 200.0 and by_candidate[Candidate()].repeats == []


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("tune_repo")
    request = BuildRequest(model="minilm", name=NAME, layers=1, precisions=(Precision.FP32,), max_batch=16, min_seq=1, opt_seq=32,
                           max_seq=64, runtimes=("onnxruntime",), serving=ServingOptions(one_hop=True, intra_op_threads=1))  # fmt: skip
    build_model(request, repo, tmp_path_factory.mktemp("tune_work"), log=lambda _: None)
    return repo


def test_repository_configs_write_a_candidate_and_restore_the_originals(repository: Path) -> None:
    configs = RepositoryConfigs(repository, NAME, "fp32")
    before = {name: (repository / name / "config.pbtxt").read_text() for name in configs.names}
    assert start_candidate(configs) == Candidate()
    changed = configs.write(Candidate(tokenizer_instances=3, engine_instances=2, max_queue_delay_us=500))
    assert set(changed) == set(configs.names) == {f"{NAME}_tokenizer", f"{NAME}_fp32_onnx", f"{NAME}_fp32_onehop"}
    tokenizer = config_from_text((repository / f"{NAME}_tokenizer" / "config.pbtxt").read_text())
    assert tokenizer.instance_group[0].count == 3 and tokenizer.dynamic_batching.max_queue_delay_microseconds == 500
    configs.write(Candidate(tokenizer_threads=2))
    hop = config_from_text((repository / f"{NAME}_fp32_onehop" / "config.pbtxt").read_text())
    assert hop.parameters["tokenizer_threads"].string_value == "2" and "cuda_graph_batch_buckets" not in hop.parameters  # CPU: no graphs
    assert start_candidate(RepositoryConfigs(repository, NAME, "fp32")) == Candidate(tokenizer_threads=2)
    assert Candidate(tokenizer_threads=2, batch_buckets="off").flags().endswith("--tokenizer-threads 2 --batch-buckets off")
    assert Candidate(batch_buckets="8").flags().endswith("--batch-buckets 8") and "--batch-buckets" not in Candidate().flags()
    configs.write(Candidate(dynamic_batching=False, tokenizer_threads=2))
    assert not any(config_from_text((repository / name / "config.pbtxt").read_text()).HasField("dynamic_batching") for name in configs.names)
    unbatched = start_candidate(RepositoryConfigs(repository, NAME, "fp32"))
    assert unbatched == Candidate(dynamic_batching=False, tokenizer_threads=2)
    assert unbatched.flags() == "--tokenizer-instances 1 --engine-instances 1 --no-dynamic-batching --tokenizer-threads 2"
    configs.write(Candidate(max_queue_delay_us=300))  # the batcher comes back, with the delay
    assert all(config_from_text((repository / name / "config.pbtxt").read_text()).dynamic_batching.max_queue_delay_microseconds == 300
               for name in configs.names)  # fmt: skip
    with pytest.raises(BadInputError, match="a queue delay needs the dynamic batcher"):
        Space(max_queue_delay_us=(0, 200), dynamic_batching=(True, False))
    configs.restore()
    assert {name: (repository / name / "config.pbtxt").read_text() for name in configs.names} == before


@pytest.mark.server
@pytest.mark.timeout(900)
def test_tune_measures_candidates_on_a_real_server_and_keeps_the_best_with_apply(repository: Path, tmp_path: Path) -> None:
    plan = dataclasses.replace(LOADS["load-cpu"], models=(NAME,), concurrencies=(8,), window_ms=500)
    space = Space(path=("ensemble", "onehop"), tokenizer_instances=(1, 2), engine_instances=(1,), max_queue_delay_us=(0,))
    explicit = ServerOptions(model_control="explicit", load_models=("*",))
    with running_server(repository, state_dir=tmp_path / "server", timeout=300, options=explicit) as handle:
        best, trials, path = tune(repository, NAME, "fp32", 60_000.0, f"127.0.0.1:{handle.ports.grpc}", plan, space, tmp_path, apply=True,
                                  log=lambda _: None, confirm=1)  # fmt: skip
    assert {t.candidate for t in trials} >= {Candidate(), Candidate(path="onehop")}
    assert all(lv.ok and not lv.failures for t in trials for lv in t.levels)
    assert best.score(60_000.0) == max(t.score(60_000.0) for t in trials) > 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == len(trials) and sum(row["best"] for row in rows) == 1
    assert len(best.repeats) == 1 and sum(len(row.get("round_scores", [])) == 2 for row in rows) == 2  # the two best, again
    manifest = json.loads((repository / f"{NAME}_tokenizer" / "manifest.json").read_text())
    assert manifest["serving_tuned"]["build_flags"] == best.candidate.flags()
    configs = read_configs(repository)
    assert configs[f"{NAME}_tokenizer"].instance_group[0].count == best.candidate.tokenizer_instances


def test_tune_section_ranks_each_searchs_trials_and_marks_the_best_within_the_budget(tmp_path: Path) -> None:
    """The report's table of a search: best first and marked, a trial whose levels all broke the budget scores 0."""
    from perf import results as rf
    from perf.records import TuneTrial
    from perf.tune import TUNE_FILE
    from perf.tune_report import tune_section

    stamp = {"run_id": "r", "device": "cpu-x", "model": "m", "precision": "fp16", "p99_budget_ms": 20.0, "candidate": {}}
    over = [{"concurrency": 64, "status": "ok", "requests_per_s": 5147.0, "p99_ms": 20.5}]
    within = [{"concurrency": 64, "status": "ok", "requests_per_s": 7120.0, "p99_ms": 14.8}, {"concurrency": 128, "status": "error"}]
    # Engine alone at batch 4: 2 ms (2,000 sequences/s); a level that formed batches of 4 at 1,000 requests/s: 50%.
    environment = {"kind": "environment", "run_id": "g", "device": "cpu-x"}
    rf.append_jsonl(tmp_path / rf.LOAD_GRID_FILE, environment)
    engine = {"kind": "engine", "run_id": "g", "model": "m", "precision": "fp16", "batch_size": 4, "seq_len": 128, "status": "ok"}
    rf.append_jsonl(tmp_path / rf.LOAD_GRID_FILE, {**engine, "median_ms": 2.0})
    formed = {"concurrency": 16, "status": "ok", "requests_per_s": 1000.0, "p50_ms": 6.25, "p99_ms": 9.0, "batches": {"m_fp16_onehop": 4.0}, "seq_len": 128}
    rf.append_record(tmp_path / TUNE_FILE, TuneTrial.from_fields({**stamp, "flags": "--engine-instances 2", "score": 0.0, "levels": over, "best": False}))
    rf.append_record(tmp_path / TUNE_FILE, TuneTrial.from_fields({**stamp, "flags": "--engine-instances 4", "score": 7060.0, "levels": within, "best": True,
                                                                   "round_scores": [7120.0, 7000.0]}))
    rf.append_record(tmp_path / TUNE_FILE, TuneTrial.from_fields({**stamp, "flags": "--one-hop", "score": 1000.0, "levels": [formed], "best": False}))
    md = "\n".join(tune_section(tmp_path))
    assert "| `--one-hop` | c16: 1000, 6.25/9.0, 50% | 1000 |" in md  # a level's p50 where it kept one
    best = "| `--engine-instances 4` **best** | c64: 7120, –/14.8; c128: error | 7060 (mean of 7120, 7000) |"
    assert best in md and "| `--engine-instances 2` | c64: 5147, –/20.5 | 0 |" in md and "requests/s, p50/p99 ms, efficiency" in md
    assert md.index(best) < md.index("`--engine-instances 2`")
    assert tune_section(tmp_path / "nothing") == []
