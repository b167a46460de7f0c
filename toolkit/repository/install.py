"""Install a built model into a Triton repository: write its models aside, validate them, then swap them in.

The build writes everything under ``build/`` first, so a failed build never touches the repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from toolkit.artifacts import ServedModel
from toolkit.repository.configs import ServingOptions
from toolkit.repository.naming import tokenizer_model

MANIFEST = "manifest.json"  # beside the tokenizer model: ``<repository>/<name>_tokenizer/manifest.json``


def install_into_repository(model: ServedModel, repository: Path, staging: Path, options: ServingOptions | None = None) -> list[str]:
    """Write ``model``'s Triton models into ``staging``, validate them, then swap them into ``repository``.

    Folders of the same model name that the new build no longer has are removed; other models stay.
    """
    from toolkit.repository.layout import validate_repository, write_model_repository

    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    written = write_model_repository(staging, model, options=options)
    (staging / tokenizer_model(model.name) / MANIFEST).write_text(json.dumps(model.manifest, indent=2, default=str))
    validate_repository(staging)
    repository.mkdir(parents=True, exist_ok=True)
    trash = staging.parent / "replaced"
    shutil.rmtree(trash, ignore_errors=True)
    trash.mkdir()
    stale = [folder for folder in repository.iterdir() if folder.is_dir() and folder.name.startswith(f"{model.name}_")]
    for folder in stale:
        shutil.move(folder, trash / folder.name)
    for entry in written:
        shutil.move(staging / entry, repository / entry)
    shutil.rmtree(trash, ignore_errors=True)
    return written
