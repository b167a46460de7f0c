"""Per-model server time from two statistics snapshots (Triton's JSON form)."""

from __future__ import annotations

from typing import Any

import pytest

from perf.server_stats import StatisticsReader, hop_times, snapshot_from_json


def _stats(name: str, requests: int, executions: int, queue_ns: int, infer_ns: int, version: str = "1") -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "execution_count": str(executions),
        "inference_stats": {
            "success": {"count": str(requests), "ns": str(queue_ns + infer_ns)},
            "queue": {"count": str(requests), "ns": str(queue_ns)},
            "compute_input": {"count": str(requests)},  # Triton leaves out zero fields
            "compute_infer": {"count": str(requests), "ns": str(infer_ns)},
            "compute_output": {},
        },
    }


def test_hop_times_divides_each_phase_by_the_requests_in_between() -> None:
    before = snapshot_from_json({"model_stats": [_stats("tok", 10, 10, 1_000_000, 5_000_000), _stats("idle", 3, 3, 0, 9)]})
    after = snapshot_from_json(
        {
            "model_stats": [
                _stats("tok", 30, 20, 3_000_000, 9_000_000),
                _stats("idle", 3, 3, 0, 9),
                _stats("engine", 20, 5, 0, 40_000_000),  # new since the first snapshot
            ]
        }
    )
    hops = hop_times(before, after)
    assert set(hops) == {"tok", "engine"}  # a model without requests in between is no hop
    assert hops["tok"] == {
        "requests": 20,
        "executions": 10,
        "request_us": pytest.approx(300.0),
        "queue_us": pytest.approx(100.0),
        "compute_input_us": 0.0,
        "compute_infer_us": pytest.approx(200.0),
        "compute_output_us": 0.0,
    }
    assert hops["engine"]["compute_infer_us"] == pytest.approx(2000.0) and hops["engine"]["executions"] == 5


def test_snapshot_sums_the_versions_of_one_model() -> None:
    snapshot = snapshot_from_json({"model_stats": [_stats("m", 2, 2, 10, 20, "1"), _stats("m", 3, 1, 30, 40, "2")]})
    assert snapshot["m"]["requests"] == 5 and snapshot["m"]["executions"] == 3 and snapshot["m"]["compute_infer_ns"] == 60


def test_reader_gives_none_once_the_server_cannot_answer() -> None:
    reader = StatisticsReader("localhost:1")  # nothing listens on port 1
    assert reader.snapshot() is None and reader.failed
    assert reader.snapshot() is None


def test_around_returns_the_result_and_no_hops_without_statistics() -> None:
    assert StatisticsReader("localhost:1").around(lambda: 7) == (7, None)


def test_step_clock_sums_phases_and_pushes_at_most_every_flush_interval() -> None:
    from toolkit.backends.common.step_timing import StepClock

    pushed: list[tuple[dict[str, float], int, int]] = []
    clock = StepClock(lambda seconds, rows, executions: pushed.append((dict(seconds), rows, executions)), flush_s=3600)
    for rows in (2, 3):
        clock.start()
        clock.mark("tokenize")
        clock.mark("engine")
        clock.done(rows)
    assert pushed == []  # not yet an hour
    clock.flush()
    ((seconds, rows, executions),) = pushed
    assert rows == 5 and executions == 2 and set(seconds) == {"tokenize", "engine", "execute"}
    assert seconds["tokenize"] + seconds["engine"] <= seconds["execute"]
    clock.flush()  # nothing since: nothing pushed
    assert len(pushed) == 1


def test_step_times_per_execute_from_two_metric_expositions_summed_over_instances() -> None:
    from perf.server_stats import step_times, steps_from_metrics

    def exposition(seconds: float, rows: int, executions: int) -> str:
        lines = ["# TYPE toolkit_step_seconds_total counter", 'nv_inference_count{model="m"} 9']
        for instance in ("m_0_0", "m_0_1"):
            labels = f'instance="{instance}",model="m"'
            lines += [f'toolkit_step_seconds_total{{{labels},phase="engine"}} {seconds}',
                      f'toolkit_step_seconds_total{{{labels},phase="execute"}} {2 * seconds}',
                      f"toolkit_step_rows_total{{{labels}}} {rows}", f"toolkit_step_executions_total{{{labels}}} {executions}"]  # fmt: skip
        return "\n".join(lines)

    before, after = steps_from_metrics(exposition(1.0, 10, 5)), steps_from_metrics(exposition(1.5, 30, 10))
    assert before == {"m": {"engine_s": 2.0, "execute_s": 4.0, "rows": 20.0, "executions": 10.0}}
    # Two instances: 1 s more engine time over 10 more executes, 40 more rows.
    assert step_times(before, after) == {"m": {"rows": 40.0, "executions": 10.0, "engine_us": 100000.0, "execute_us": 200000.0}}
    assert step_times(after, after) == {}
