"""Write a served model's Triton repository folders and check a repository reads back.

Layout per model: ``<root>/<model>/config.pbtxt`` and ``<root>/<model>/1/`` holding the
engine file, the tokenizer's Python-backend ``model.py`` (+ tokenizer files), or nothing (ensembles).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from toolkit.artifacts import EngineArtifact, ServedModel
from toolkit.errors import BadInputError
from toolkit.repository.configs import (
    ServingOptions,
    config_for_engine,
    config_for_ensemble,
    config_for_labels,
    config_for_onehop,
    config_for_tokenizer,
    config_from_text,
    config_text,
)
from toolkit.runtimes import get_runtime

BACKENDS_DIR = Path(__file__).resolve().parent.parent / "backends"
TOKENIZER_FILES = {
    "model.py": BACKENDS_DIR / "tokenizer" / "model.py",
    "text_encoder.py": BACKENDS_DIR / "common" / "text_encoder.py",
    "step_timing.py": BACKENDS_DIR / "common" / "step_timing.py",
}
LABELS_MODEL_PY = BACKENDS_DIR / "labels" / "model.py"
VERSION = "1"


def place_file(source: Path, target: Path) -> None:
    """Hard-link ``source`` at ``target`` (engines can be hundreds of MB), copying across filesystems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _write_model(root: Path, config: model_config_pb2.ModelConfig, files: dict[str, Path]) -> str:
    """Replace ``<root>/<config.name>`` with the config and ``files`` ({path under 1/: source})."""
    folder = root / config.name
    if folder.exists():
        shutil.rmtree(folder)
    (folder / VERSION).mkdir(parents=True)
    (folder / "config.pbtxt").write_text(config_text(config))
    for relative, source in files.items():
        place_file(source, folder / VERSION / relative)
    return config.name


def _engine_files(engine: EngineArtifact) -> dict[str, Path]:
    """The engine under its runtime's file name, plus ONNX external-data siblings (``x.onnx.data``).

    External data is referenced by its own file name inside the graph, so siblings keep their names.
    """
    files = {get_runtime(engine.runtime).model_file: engine.path}
    for sibling in engine.path.parent.glob(f"{engine.path.name}.*"):
        files[sibling.name] = sibling
    return files


def _check_inputs(model: ServedModel) -> None:
    problems = []
    if not (model.tokenizer_dir / "tokenizer.json").is_file():
        problems.append(f"no tokenizer.json in {model.tokenizer_dir} (save the tokenizer with save_pretrained)")
    if not model.engines:
        problems.append(f"model {model.name!r} has no engines: build at least one precision first")
    problems += [f"engine file {e.path} does not exist" for e in model.engines if not e.path.is_file()]
    keys = [(e.precision, e.runtime) for e in model.engines]
    if len(set(keys)) != len(keys):
        problems.append(f"model {model.name!r} has two engines of one (precision, runtime): {keys}")
    if problems:
        raise BadInputError("; ".join(problems))


def write_model_repository(root: Path, model: ServedModel, *, gpu: bool = False, options: ServingOptions | None = None) -> list[str]:
    """Write the tokenizer, engines and text ensembles of ``model`` under ``root``.

    Returns the Triton model names written. Other models already under ``root`` are kept;
    folders of the same names are replaced. ``gpu`` (or ``options.gpu``) places engine
    instances on GPUs; ``options`` sets batching delay, instances and threads.
    """
    _check_inputs(model)
    options = dataclasses.replace(options or ServingOptions(), gpu=gpu or (options is not None and options.gpu))
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_files = {f"tokenizer/{p.name}": p for p in sorted(model.tokenizer_dir.iterdir()) if p.is_file()}
    models = [
        (config_for_tokenizer(model, options), {**TOKENIZER_FILES, **tokenizer_files}),
    ]
    if model.labels:
        models.append((config_for_labels(model, options), {"model.py": LABELS_MODEL_PY}))
    for engine in model.engines:
        models.append((config_for_engine(model, engine, options), _engine_files(engine)))
        models.append((config_for_ensemble(model, engine.precision, engine.runtime), {}))
        one_hop = get_runtime(engine.runtime).one_hop_backend()
        if options.one_hop and one_hop is not None:
            models.append((config_for_onehop(model, engine, options), {**one_hop, **_engine_files(engine), **tokenizer_files}))
    names = [config.name for config, _ in models]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:  # one folder would silently overwrite the other
        raise BadInputError(f"model names {clashes} are used twice: make toolkit.repository.naming give each model its own name")
    for config, files in models:
        _write_model(root, config, files)
    validate_repository(root)
    return names


def read_configs(root: Path) -> dict[str, model_config_pb2.ModelConfig]:
    """Parse every ``<root>/*/config.pbtxt`` into a ``ModelConfig``, keyed by folder name."""
    configs = {}
    for path in sorted(root.glob("*/config.pbtxt")):
        try:
            configs[path.parent.name] = config_from_text(path.read_text())
        except text_format.ParseError as error:
            raise BadInputError(f"{path}: not a valid Triton config: {error}") from error
    return configs


def validate_repository(root: Path) -> dict[str, model_config_pb2.ModelConfig]:
    """Check every config parses, names its folder, has a version folder, and every ensemble step exists.

    Collects all problems and raises one ``BadInputError`` listing them.
    """
    configs = read_configs(root)
    problems = []
    if not configs:
        problems.append(f"{root} holds no model (no */config.pbtxt)")
    for folder, config in configs.items():
        if config.name != folder:
            problems.append(f"{folder}/config.pbtxt names the model {config.name!r}, not its folder name")
        if not (root / folder / VERSION).is_dir():
            problems.append(f"{folder} has no version folder {VERSION}/")
        for step in config.ensemble_scheduling.step:
            if step.model_name not in configs:
                problems.append(f"ensemble {folder} calls {step.model_name!r}, which the repository lacks")
    if problems:
        raise BadInputError(f"invalid model repository {root}: " + "; ".join(problems))
    return configs
