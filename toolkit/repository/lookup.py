"""What clients and perf read from a built Triton repository: engine files, input names, the tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.errors import BadInputError
from toolkit.names import (
    ENGINE_INPUTS,
    MODEL_FILE_OF_RUNTIME,
    Family,
    Runtime,
    engine_model,
    tokenizer_model,
)


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


def engine_input_names(repository: Path | None, model: str, precision: str, runtime: str) -> tuple[str, ...]:
    """Inputs of an engine model: from its config, else the family's contract in ``toolkit.names``."""
    parsed = model_config(repository, engine_model(model, precision, runtime)) if repository else None
    if parsed is not None and len(parsed.input) > 0:
        return tuple(i.name for i in parsed.input)
    family = Family.GPT2 if "gpt" in model.lower() else Family.BERT
    return ENGINE_INPUTS[family]


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


def engine_file(repository: Path, model: str, precision: str, runtime: str) -> Path | None:
    """The engine file (``model.onnx``/``model.plan``) of one engine model, highest version first."""
    folder = Path(repository) / engine_model(model, precision, runtime)
    name = MODEL_FILE_OF_RUNTIME[Runtime(runtime)]
    versions = sorted(folder.glob(f"*/{name}"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1, reverse=True)
    return versions[0] if versions else None


def require_engine_file(repository: Path, model: str, precision: str, runtime: str = "onnxruntime") -> Path:
    """``engine_file``, or a BadInputError that says how to build the missing engine."""
    path = engine_file(repository, model, precision, runtime)
    if path is None:
        raise BadInputError(f"no {runtime} engine for {model} {precision} in {repository}; build it first (build_engines.py --model {model})")
    return path
