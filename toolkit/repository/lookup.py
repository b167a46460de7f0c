"""What clients and perf read from a built Triton repository: manifests, engine files, input names, the tokenizer.

A model is known by its manifest (``<name>_tokenizer/manifest.json``, written by the build), never by its name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.errors import BadInputError
from toolkit.models.families import ModelFamily, family_named
from toolkit.repository.install import MANIFEST
from toolkit.repository.naming import engine_model, tokenizer_model
from toolkit.runtimes import DEFAULT_RUNTIME, get_runtime


def read_manifest(repository: Path, name: str) -> dict[str, Any] | None:
    """The build manifest of model ``name`` in ``repository``, or None when no build wrote one."""
    path = Path(repository) / tokenizer_model(name) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def model_config(repository: Path, triton_model: str) -> Any | None:
    """The model's ``config.pbtxt`` as a ModelConfig message, or None when absent or unreadable."""
    from google.protobuf import text_format

    from toolkit.repository.configs import config_from_text

    path = Path(repository) / triton_model / "config.pbtxt"
    if not path.is_file():
        return None
    try:
        return config_from_text(path.read_text())
    except text_format.ParseError:
        return None


def engine_input_names(repository: Path, model: str, precision: str, runtime: str = DEFAULT_RUNTIME) -> tuple[str, ...]:
    """Inputs of an engine model: from its config, else from the tokenizer model's config (the same tensors)."""
    for triton_model in (engine_model(model, precision, runtime), tokenizer_model(model)):
        parsed = model_config(repository, triton_model)
        if parsed is not None:
            names = [tensor.name for tensor in (parsed.input if triton_model != tokenizer_model(model) else parsed.output)]
            return tuple(name for name in names if name != "truncated")
    raise BadInputError(f"no config of {engine_model(model, precision, runtime)} or {tokenizer_model(model)} in {repository}; build {model} first")


def find_tokenizer(repository: Path | None, model: str, override: Path | None = None) -> Path:
    """The ``tokenizer.json`` for ``model``: ``override``, else one under the tokenizer model's folder."""
    if override is not None:
        return Path(override)
    if repository is not None:
        for folder in (Path(repository) / tokenizer_model(model), Path(repository) / model):
            found = sorted(folder.rglob("tokenizer.json")) if folder.is_dir() else []
            if found:
                return found[0]
    raise BadInputError(
        f"no tokenizer.json for model {model!r} under {repository}/{tokenizer_model(model)}; pass --tokenizer PATH/tokenizer.json"
    )


def engine_file(repository: Path, model: str, precision: str, runtime: str = DEFAULT_RUNTIME) -> Path | None:
    """The engine file (``model.onnx``/``model.plan``) of one engine model, highest version first."""
    folder = Path(repository) / engine_model(model, precision, runtime)
    name = get_runtime(runtime).model_file
    versions = sorted(folder.glob(f"*/{name}"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1, reverse=True)
    return versions[0] if versions else None


def require_engine_file(repository: Path, model: str, precision: str, runtime: str = DEFAULT_RUNTIME) -> Path:
    """``engine_file``, or a BadInputError that says how to build the missing engine."""
    path = engine_file(repository, model, precision, runtime)
    if path is None:
        raise BadInputError(f"no {runtime} engine for {model} {precision} in {repository}; build it first (build_engines.py --models {model})")
    return path


def model_family(repository: Path, name: str) -> ModelFamily:
    """The family of built model ``name``, from its manifest."""
    manifest = read_manifest(repository, name)
    if manifest is None:
        raise BadInputError(f"no manifest of {name!r} in {repository}/{tokenizer_model(name)}: build it with build_engines.py first")
    family = manifest.get("family")
    return family_named(family["name"] if isinstance(family, dict) else str(family))
