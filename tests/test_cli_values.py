"""Comma-separated option values, as every CLI parses them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from perf.cli import main as perf_main
from toolkit.cli_values import comma_ints, comma_items
from toolkit.errors import BadInputError


def test_comma_values_parse_items_and_positive_integers_when_well_formed() -> None:
    assert comma_items(" fp16, hybrid ,", "--precisions", ("fp32", "fp16", "hybrid")) == ("fp16", "hybrid")
    assert comma_ints("1,8, 32", "--batch") == (1, 8, 32)
    assert comma_ints("", "--seq-buckets", allow_empty=True) == ()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: comma_items("fp8", "--precisions", ("fp32", "fp16")), "--precisions fp8 not allowed; choose from fp32,fp16"),
        (lambda: comma_items(" , ", "--models"), "--models ' , ' is empty"),
        (lambda: comma_ints("1,x", "--batch"), "--batch '1,x': expected comma-separated positive integers"),
        (lambda: comma_ints("8,0", "--seq"), "--seq '8,0': expected comma-separated positive integers"),
    ],
)
def test_comma_values_name_the_flag_when_bad(call: object, message: str) -> None:
    with pytest.raises(BadInputError, match=message.replace("(", r"\(")):
        call()  # type: ignore[operator]


def test_perf_cli_prints_one_line_error_when_batch_is_not_integers() -> None:
    result = CliRunner().invoke(perf_main, ["sweep", "--batch-sizes", "1,eight"])
    assert result.exit_code == 1
    assert "Error: --batch-sizes '1,eight': expected comma-separated positive integers" in result.output


def test_gpu_indices_takes_all_the_visible_gpus_or_distinct_indices() -> None:
    from toolkit.cli_values import gpu_indices

    assert gpu_indices("all", "--gpus", 2) == (0, 1) and gpu_indices("0,3", "--gpus", 0) == (0, 3)
    with pytest.raises(BadInputError, match="no GPU is visible"):
        gpu_indices("all", "--gpus", 0)
    for bad in ("0,0", "-1", "one"):
        with pytest.raises(BadInputError, match="--gpus"):
            gpu_indices(bad, "--gpus", 2)
