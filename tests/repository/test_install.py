"""Installing a built model into a repository (``toolkit/repository/install.py``): all or nothing, even when killed.

Every file is compared by its sha256 before and after. Failures are injected at each rename the install
makes (``os.rename``, which ``shutil.move`` uses, and ``os.replace``), one run per step: raised in the
process (a full disk, Ctrl-C), or as a kill (``os._exit`` in a forked child) that leaves the half-done
state on disk for the next install to find.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tiny_models import MINILM_TOKENIZER, MINILM_TOKENIZER_FILES

from toolkit.artifacts import EngineArtifact, ServedModel, TensorSpec
from toolkit.errors import BadInputError
from toolkit.names import Precision
from toolkit.repository.install import install_into_repository

NAME = "swap"
HIDDEN = 16
OUTPUTS = (TensorSpec("last_hidden_state", (-1, HIDDEN)), TensorSpec("sentence_embedding", (HIDDEN,)))


def _served(folder: Path, precisions: tuple[Precision, ...], version: str, name: str = NAME) -> ServedModel:
    """A model whose engine files are placeholders saying ``version`` (the install never opens them)."""
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    for file in MINILM_TOKENIZER_FILES:
        shutil.copy2(MINILM_TOKENIZER / file, tokenizer_dir / file)
    engines = []
    for precision in precisions:
        path = folder / f"{precision.value}.onnx"
        path.write_bytes(f"{name} {precision.value} engine, build {version}\n".encode() * 1000)
        engines.append(EngineArtifact(precision, "onnxruntime", path, OUTPUTS))
    return ServedModel(
        name=name, family="bert", tokenizer_dir=tokenizer_dir, engine_inputs=("input_ids", "attention_mask", "token_type_ids"),
        ensemble_outputs=("sentence_embedding",), max_batch_size=4, max_seq_len=32, engines=engines, manifest={"name": name, "build": version},
    )  # fmt: skip


def _contents(repository: Path) -> dict[str, str]:
    """Every file's sha256 and every folder, by path under ``repository``."""
    return {
        str(path.relative_to(repository)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        for path in sorted(repository.rglob("*"))
    }


class Renames:
    """Counts the install's renames (``os.rename``, ``os.replace``) and runs ``fail`` instead of rename number ``at``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, at: int = 0, fail: Callable[[], None] = lambda: None) -> None:
        self.calls, self.at, self.fail = 0, at, fail
        for name in ("rename", "replace"):
            monkeypatch.setattr(os, name, self._counted(getattr(os, name)))

    def _counted(self, real: Callable[..., None]) -> Callable[..., None]:
        def rename(*args: Any, **kwargs: Any) -> None:
            self.calls += 1
            if self.calls == self.at:
                self.fail()
            real(*args, **kwargs)

        return rename


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ServedModel]:
    """``old`` (fp32, fp16) as installed; ``new`` (fp32, hybrid; other bytes) replacing it; ``broken`` (no engine file)."""
    root = tmp_path_factory.mktemp("install_models")
    old = _served(root / "old", (Precision.FP32, Precision.FP16), "old")
    new = _served(root / "new", (Precision.FP32, Precision.HYBRID), "new")
    broken = _served(root / "broken", (Precision.FP32,), "broken")
    broken.engines[0].path.unlink()
    return {"old": old, "new": new, "broken": broken}


@pytest.fixture(scope="module")
def installed(models: dict[str, ServedModel], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Repositories holding ``old`` and ``new`` after a plain install, each beside a neighbour model, ``other``."""
    root = tmp_path_factory.mktemp("installed")
    repositories = {}
    for version in ("old", "new"):
        repository = root / version / "repo"
        install_into_repository(_served(root / "other", (Precision.FP32,), "other", "other"), repository, root / version / "w" / "o")
        install_into_repository(models[version], repository, root / version / "w" / "s")
        repositories[version] = repository
    return repositories


def _old_repository(installed: dict[str, Path], folder: Path) -> Path:
    shutil.copytree(installed["old"], folder / "repo")
    return folder / "repo"


def _renames_of_one_install(models: dict[str, ServedModel], installed: dict[str, Path], folder: Path) -> int:
    with pytest.MonkeyPatch.context() as monkeypatch:
        renames = Renames(monkeypatch)
        install_into_repository(models["new"], _old_repository(installed, folder), folder / "work" / "stage")
    assert renames.calls >= 5, "the swap moves every old and new folder by renaming it"
    return renames.calls


def test_install_replaces_old_models_byte_for_byte_and_keeps_neighbours_when_it_succeeds(installed: dict[str, Path]) -> None:
    old, new = _contents(installed["old"]), _contents(installed["new"])
    assert {path: digest for path, digest in old.items() if path.startswith("other_")} == {
        path: digest for path, digest in new.items() if path.startswith("other_")
    }
    assert "swap_fp16_onnx/1/model.onnx" in old and "swap_fp16_onnx" not in new  # a precision the new build lacks goes
    assert old["swap_fp32_onnx/1/model.onnx"] != new["swap_fp32_onnx/1/model.onnx"]
    assert not [p.name for p in installed["new"].parent.iterdir() if p.name.startswith(".")], "no swap folder may stay behind"


def test_install_keeps_another_model_when_its_name_starts_with_this_models_name(models: dict[str, ServedModel], tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    install_into_repository(_served(tmp_path / "neighbour", (Precision.FP32,), "neighbour", f"{NAME}_v2"), repository, tmp_path / "w1")
    neighbour = _contents(repository)
    install_into_repository(models["new"], repository, tmp_path / "w2")
    assert {path: digest for path, digest in _contents(repository).items() if path.startswith(f"{NAME}_v2_")} == neighbour


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["disk-full", "ctrl-c"])
def test_install_keeps_old_models_byte_for_byte_when_any_rename_fails(
    error: BaseException, models: dict[str, ServedModel], installed: dict[str, Path], tmp_path: Path
) -> None:
    old, new = _contents(installed["old"]), _contents(installed["new"])
    steps = _renames_of_one_install(models, installed, tmp_path / "count")

    def fail() -> None:
        raise error

    for step in range(1, steps + 1):
        folder = tmp_path / f"step{step}"
        repository = _old_repository(installed, folder)
        with pytest.MonkeyPatch.context() as monkeypatch:
            Renames(monkeypatch, at=step, fail=fail)
            try:
                install_into_repository(models["new"], repository, folder / "work" / "stage")
            except type(error):
                expected = old
            else:  # shutil.move copies where a rename fails with an OSError: the install may go on and finish
                expected = new
        assert _contents(repository) == expected, f"rename {step} of {steps} failed and the repository is neither old nor new"
        assert not [p.name for p in folder.iterdir() if p.name.startswith(".")], f"rename {step}: swap folder left behind"


def _install_killed_at(step: int, model: ServedModel, repository: Path, staging: Path) -> None:
    """In a forked child: the install, killed (no clean-up, no ``finally``) instead of its rename number ``step``."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        Renames(monkeypatch, at=step, fail=lambda: os._exit(137))
        install_into_repository(model, repository, staging)


def test_next_install_rolls_back_what_a_killed_install_left_when_any_rename_was_interrupted(
    models: dict[str, ServedModel], installed: dict[str, Path], tmp_path: Path
) -> None:
    old, new = _contents(installed["old"]), _contents(installed["new"])
    steps = _renames_of_one_install(models, installed, tmp_path / "count")
    fork = multiprocessing.get_context("fork")
    for step in range(1, steps + 1):
        folder = tmp_path / f"step{step}"
        repository = _old_repository(installed, folder)
        child = fork.Process(target=_install_killed_at, args=(step, models["new"], repository, folder / "work" / "stage"))
        child.start()
        child.join(60)
        if child.is_alive():  # hung: end it before failing
            child.kill()
            child.join()
        assert child.exitcode == 137, f"rename {step}: the child was not killed there (exit code {child.exitcode})"
        # The next install fails before its own swap (its engine file is missing): the interrupted one must be undone.
        with pytest.raises(BadInputError, match="does not exist"):
            install_into_repository(models["broken"], repository, folder / "work2" / "stage")
        assert _contents(repository) == old, f"killed at rename {step} of {steps}: the previous models were not restored"
        install_into_repository(models["new"], repository, folder / "work3" / "stage")
        assert _contents(repository) == new, f"killed at rename {step} of {steps}: the next install did not complete"
