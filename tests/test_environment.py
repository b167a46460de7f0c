"""What records say about the code and the machine that made them."""

from __future__ import annotations

import subprocess

import pytest

from toolkit.environment import code_version


def test_code_version_names_toolkit_commit_when_set_even_inside_a_git_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_COMMIT", "abc1234")
    assert code_version() == "abc1234"


def test_code_version_is_git_describe_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOOLKIT_COMMIT", raising=False)
    described = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False).stdout.strip()
    assert code_version() == (described or None)
