"""The verdict that ends `python -m client fidelity` (and `make demo`), read from real stored records."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from client.fidelity import FidelityRecord, Tolerances, check_records, fidelity_summaries, format_summary, read_results

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "results" / "h200" / "fidelity_minilm.json"  # the served MiniLM on an H200: 24 cases, 3 precisions


def _rows(text: str) -> dict[str, list[str]]:
    """The summary's rows by precision, split on runs of two or more spaces."""
    lines = [line for line in text.splitlines()[2:] if not line.startswith("full record: ")]
    return {cells[1]: cells for cells in (re.split(r"\s{2,}", line) for line in lines)}


def test_summary_passes_every_precision_with_its_worst_cosine_when_real_record() -> None:
    records = read_results(RECORD)
    text = format_summary(records, RECORD)
    rows = _rows(text)
    assert list(rows) == ["fp32", "fp16", "hybrid"]
    for summary in fidelity_summaries(records):
        model, precision, cosine, rates, latency, bar, verdict = rows[summary.precision]
        assert (model, cosine, rates, verdict) == ("minilm", f"{summary.cosine_min:.7f}", "none", "PASS")
        assert latency == "not recorded"  # written before records carried their latency
        assert bar == f"cosine >= {Tolerances().cosine_limit(precision):g}, no NaN/Inf"
    assert text.splitlines()[-1] == f"full record: {RECORD}"


def test_summary_fails_only_the_precision_that_breaks_its_bar_when_one_text_case_degrades() -> None:
    records = read_results(RECORD)
    victim = next(r for r in records if r.precision == "fp16" and r.inputs == "text")
    output = next(iter(victim.outputs))
    victim.outputs[output] = dataclasses.replace(victim.outputs[output], cosine_min=0.99, nan_rate=0.25)
    rows = _rows(format_summary(records))
    assert {precision: row[-1] for precision, row in rows.items()} == {"fp32": "PASS", "fp16": "FAIL", "hybrid": "PASS"}
    assert rows["fp16"][2] == "0.9900000" and rows["fp16"][3] == "25.00% / 0.00%"
    assert check_records([r for r in records if r.precision == "fp16"])  # the same judgement as the exit status


def test_summary_gives_the_median_latency_of_the_smallest_batch_at_the_longest_length() -> None:
    base = read_results(RECORD)[0]
    records = [
        dataclasses.replace(base, precision="fp16", batch=batch, seq=seq, concurrency=1, latency_ms=latency)
        for batch, seq, latency in ((1, 32, 1.0), (1, 128, 3.0), (1, 128, 5.0), (8, 128, 40.0))
    ]
    assert _rows(format_summary(records))["fp16"][4] == "4.00 ms (b1 s128, 1 in flight)"


def test_record_reads_back_its_latency_and_older_records_read_without_one() -> None:
    record = dataclasses.replace(read_results(RECORD)[0], concurrency=2, latency_ms=3.5)
    again = FidelityRecord.from_json(record.to_json())
    assert (again.concurrency, again.latency_ms) == (2, 3.5)
    assert read_results(RECORD)[0].latency_ms is None
