"""Install a built model into a Triton repository: write its models aside, validate them, then swap them in.

The build writes everything under ``build/`` first, so a failed build never touches the repository.
The swap itself is all or nothing. It works in a folder beside the repository (``.<repository>.install-<name>/``,
on the repository's filesystem, so each move is one rename): the validated models go there as ``incoming/``,
then a journal naming the folders to replace and to install is written, the old folders are renamed into
``replaced/`` and the new ones into the repository, and the journal is marked committed. A failure rolls
the renames back at once; a process killed midway leaves the journal, and the next install (or build)
first rolls back what it names (``recover_interrupted_installs``), so the repository always ends up with
either the previous models or the new ones, complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from toolkit.artifacts import ServedModel
from toolkit.errors import BadInputError
from toolkit.repository.configs import ServingOptions
from toolkit.repository.naming import model_names, tokenizer_model

MANIFEST = "manifest.json"  # beside the tokenizer model: ``<repository>/<name>_tokenizer/manifest.json``
JOURNAL = "journal.json"
INCOMING = "incoming"
REPLACED = "replaced"
SWAPPING, COMMITTED = "swapping", "committed"

log = logging.getLogger(__name__)


def install_into_repository(model: ServedModel, repository: Path, staging: Path, options: ServingOptions | None = None) -> list[str]:
    """Write ``model``'s Triton models into ``staging``, validate them, then swap them into ``repository``.

    Folders of ``model``'s Triton models that the new build no longer has are removed; other models stay.
    An install that an earlier process left unfinished is rolled back first.
    """
    from toolkit.repository.layout import validate_repository, write_model_repository

    recover_interrupted_installs(repository)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    written = write_model_repository(staging, model, options=options)
    (staging / tokenizer_model(model.name) / MANIFEST).write_text(json.dumps(model.manifest, indent=2, default=str))
    validate_repository(staging)
    repository.mkdir(parents=True, exist_ok=True)
    swap = swap_folder(repository, model.name)
    if os.stat(repository).st_dev != os.stat(swap.parent).st_dev:
        raise BadInputError(
            f"{repository} is a mount point: the install swaps models in by renaming them from {swap.parent}, another filesystem; pass --repository a folder inside it"
        )
    swap.mkdir()
    try:
        shutil.move(staging, swap / INCOMING)  # may copy across filesystems: nothing is journaled yet, so a kill here changes nothing
        (swap / REPLACED).mkdir()
        journal: dict[str, Any] = {"repository": str(repository.resolve()), "replaced": own_folders(repository, model.name), "installed": written}
        _write_journal(swap, {**journal, "state": SWAPPING})
        for folder in journal["replaced"]:
            os.rename(repository / folder, swap / REPLACED / folder)
        for entry in written:
            os.rename(swap / INCOMING / entry, repository / entry)
        _write_journal(swap, {**journal, "state": COMMITTED})
    except BaseException:
        _finish(swap)  # rolls back; should that fail too, the journal stays for the next install
        raise
    _finish(swap)
    return written


def swap_folder(repository: Path, name: str) -> Path:
    """Where installing ``name`` into ``repository`` keeps its journal, the incoming and the replaced folders."""
    return repository.parent / f".{repository.name}.install-{name}"


def own_folders(repository: Path, name: str) -> list[str]:
    """The folders in ``repository`` of model ``name``'s Triton models (never another model whose name starts with it)."""
    names = model_names(name)
    return sorted(folder.name for folder in repository.iterdir() if folder.is_dir() and folder.name in names)


def recover_interrupted_installs(repository: Path) -> list[str]:
    """Finish every install into ``repository`` that a killed process left: roll back unless it had committed.

    Returns one line per install it found, saying what it did (also logged as a warning).
    """
    done = []
    for swap in sorted(swap_folder(repository, "*").parent.glob(swap_folder(repository, "*").name)):
        if swap.is_dir():
            outcome = _finish(swap)
            done.append(f"{swap}: an interrupted install was {outcome}")
            log.warning(done[-1])
    return done


def _write_journal(swap: Path, journal: dict[str, Any]) -> None:
    """Replace the journal in one rename of a synced file, so it is always whole."""
    temporary = swap / f"{JOURNAL}.tmp"
    with temporary.open("w") as handle:
        json.dump(journal, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, swap / JOURNAL)


def _finish(swap: Path) -> str:
    """Complete (committed journal) or roll back (any other state) the install in ``swap``, then remove ``swap``.

    Without a journal the swap had not begun: ``incoming/`` is a copy and the repository is untouched.
    Every move is a rename, which happens entirely or not at all: a new folder is in the repository only
    if ``incoming/`` lacks it, an old one in ``replaced/`` only if it was moved there.
    """
    path = swap / JOURNAL
    journal = json.loads(path.read_text()) if path.is_file() else None
    if journal is None:
        outcome = "discarded before it changed the repository"
    elif journal["state"] == COMMITTED:
        outcome = "complete: removed the replaced models"
    else:
        repository = Path(journal["repository"])
        for entry in journal["installed"]:
            if (repository / entry).exists() and not (swap / INCOMING / entry).exists():
                os.rename(repository / entry, swap / INCOMING / entry)
        for folder in journal["replaced"]:
            if (swap / REPLACED / folder).exists():
                os.rename(swap / REPLACED / folder, repository / folder)
        outcome = "rolled back: the previous models are in place"
    path.unlink(missing_ok=True)  # first: what is left of ``swap`` is rubbish from here on
    shutil.rmtree(swap)
    return outcome
