"""NVIDIA Triton Model Analyzer (``model-analyzer profile``) on one model of our repository.

Three things it needs from us, all written here: a server in explicit model control (its remote mode loads
and unloads the configurations it measures), on loopback and of its own so that it disturbs no other
server (its reload of the shared tokenizer model with another ``max_batch_size`` would unload every other
ensemble of the model; README, "Triton Model Analyzer"); input data for the engine models' dynamic sequence
axes and the ensembles' TEXT (``perf.inputs``, the files the perf sweeps use); and the path of tritonclient's
perf_analyzer (the ``perf-analyzer`` wheel Model Analyzer pulls in is an empty placeholder here).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import BadInputError, DependencyMissingError
from toolkit.names import TEXT
from toolkit.serving.server import LOOPBACK, Ports, ServerOptions

MODEL_ANALYZER_PACKAGE = "triton-model-analyzer==1.58.0"
# Beside `make serve` (8000-8002), so both can run at once.
ANALYZER_PORTS = Ports(http=8100, grpc=8101, metrics=8102)
ANALYZER_SERVER = ServerOptions(listen=LOOPBACK, model_control="explicit")


@dataclass(frozen=True)
class AnalyzerRequest:
    """One Model Analyzer run: which model of which local repository, where its files go, what it sweeps.

    ``concurrency`` / ``batch_sizes`` (both optional) replace Model Analyzer's own search with these values.
    """

    model: str
    repository: Path
    out_dir: Path
    seq_len: int = 128
    ports: Ports = ANALYZER_PORTS
    concurrency: tuple[int, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise BadInputError(f"sequence length {self.seq_len}: input data needs 2 tokens or more (--seq-lens 2 or more)")
        if any(value < 1 for value in (*self.concurrency, *self.batch_sizes)):
            raise BadInputError(f"concurrency {self.concurrency} / batch sizes {self.batch_sizes}: every value must be 1 or more")


def find_model_analyzer() -> Path:
    """The ``model-analyzer`` script beside this Python, else one on PATH."""
    beside = Path(sys.executable).parent / "model-analyzer"
    found = beside if beside.is_file() else shutil.which("model-analyzer")
    if not found:
        raise DependencyMissingError(f"model-analyzer not found beside {sys.executable} or on PATH: pip install {MODEL_ANALYZER_PACKAGE}")
    return Path(found)


@dataclass(frozen=True)
class ProfiledInputs:
    """What a Triton model takes, and the tokenizer that makes it: TEXT for an ensemble, token ids otherwise."""

    names: tuple[str, ...]
    tokenizer: Path
    max_seq_len: int


def profiled_inputs(repository: Path, model: str) -> ProfiledInputs:
    """Read from the configs: the model's inputs, and the tokenizer model of the ensemble that runs it
    (the ensemble step that takes TEXT); its ``max_seq_len`` caps the input data's length."""
    from toolkit.repository.layout import read_configs

    configs = read_configs(repository)
    if model not in configs:
        raise BadInputError(f"model {model!r} is not in {repository} (it has {', '.join(sorted(configs))}); pass --models one of them")
    config = configs[model]
    ensembles = [c for c in configs.values() if c.platform == "ensemble" and (c.name == model or any(s.model_name == model for s in c.ensemble_scheduling.step))]
    steps = [step for ensemble in ensembles for step in ensemble.ensemble_scheduling.step if TEXT in step.input_map]
    if not steps:
        raise BadInputError(f"no ensemble in {repository} feeds {model!r} from a tokenizer model: cannot make its input data")
    tokenizer_model = configs[steps[0].model_name]
    found = sorted((repository / tokenizer_model.name).rglob("tokenizer.json"))
    if not found:
        raise BadInputError(f"{repository / tokenizer_model.name} holds no tokenizer.json: rebuild the repository (build_engines.py)")
    names = (TEXT,) if config.platform == "ensemble" else tuple(i.name for i in config.input)
    return ProfiledInputs(names, found[0], int(tokenizer_model.parameters["max_seq_len"].string_value))


def write_analyzer_inputs(request: AnalyzerRequest) -> Path:
    """perf_analyzer's ``--input-data`` file for the model, ``min(seq_len, max_seq_len)`` tokens per row."""
    from perf.inputs import perf_analyzer_data, write_perf_analyzer_data

    inputs = profiled_inputs(request.repository, request.model)
    seq_len = min(request.seq_len, inputs.max_seq_len)
    return write_perf_analyzer_data(request.out_dir / f"inputs_s{seq_len}.json", perf_analyzer_data(inputs.tokenizer, inputs.names, seq_len))


def model_analyzer_config(request: AnalyzerRequest, input_data: Path, perf_analyzer: Path) -> dict[str, Any]:
    """The ``model-analyzer profile -f`` config (as a dict) for the model on a loopback server at ``request.ports``."""
    out = request.out_dir.resolve()
    config: dict[str, Any] = {
        "model_repository": str(request.repository.resolve()),
        "triton_launch_mode": "remote",
        "client_protocol": "grpc",
        "triton_http_endpoint": f"{LOOPBACK}:{request.ports.http}",
        "triton_grpc_endpoint": f"{LOOPBACK}:{request.ports.grpc}",
        "triton_metrics_url": f"http://{LOOPBACK}:{request.ports.metrics}/metrics",
        "perf_analyzer_path": str(perf_analyzer),
        "export_path": str(out / "results"),
        "checkpoint_directory": str(out / "checkpoints"),
        "output_model_repository_path": str(out / "output_model_repository"),
        "override_output_model_repository": True,
        "profile_models": {request.model: {"perf_analyzer_flags": {"input-data": str(input_data.resolve())}}},
    }
    if request.concurrency or request.batch_sizes:
        config["run_config_search_disable"] = True
        config |= {key: list(values) for key, values in (("concurrency", request.concurrency), ("batch_sizes", request.batch_sizes)) if values}
    return config | request.extra


def write_model_analyzer_config(request: AnalyzerRequest) -> Path:
    """Write the input data and ``config.yaml`` under ``request.out_dir``; returns the config's path."""
    import yaml

    from perf.analyzer import find_perf_analyzer

    config = model_analyzer_config(request, write_analyzer_inputs(request), find_perf_analyzer())
    path = request.out_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_model_analyzer(request: AnalyzerRequest, *, timeout: float = 300.0) -> int:
    """Start a loopback server in explicit model control on ``request.ports``, run ``model-analyzer profile``
    on the written config, stop the server; returns Model Analyzer's exit status."""
    from perf.analyzer import analyzer_env, check_libb64
    from toolkit.serving.server import running_server

    check_libb64()
    config = write_model_analyzer_config(request)
    command = [str(find_model_analyzer()), "profile", "-f", str(config)]
    with running_server(request.repository, request.ports, state_dir=request.out_dir / "server", timeout=timeout, options=ANALYZER_SERVER):
        return subprocess.call(command, env=analyzer_env())
