"""How an encoder's token states become the served ``sentence_embedding``, computed inside the engine graph.

A sentence-transformers checkpoint says how it pools in its own files (``modules.json``, the Pooling module's
``config.json``, a ``Normalize`` module, ``sentence_bert_config.json``); those are honoured so that the served
embedding equals ``SentenceTransformer.encode``. A plain transformers checkpoint gets the mean over attended
tokens. ``--pooling`` / ``--normalize`` override either; the manifest records which pooling was used and why.
A sentence-transformers pipeline the toolkit cannot reproduce (a Dense layer, a default prompt...) stops the
build with the reason: it never serves a different embedding silently.

The torch code below runs in the export wrapper, with right-padded rows (the served tokenizer pads right), so
the first token is each row's first attended one. It uses element-wise ops, reductions and MatMul only, which
ONNX Runtime keeps on the GPU (a Range or Gather-by-index would land on the CPU and rule out CUDA graphs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import BadInputError

if TYPE_CHECKING:
    import torch

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# sentence-transformers' legacy boolean keys, in the order it concatenates the modes they select.
LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
HONOURED_MODULES = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True)
class Pooling:
    """Pooling modes (concatenated in this order), whether the result is L2-normalised, and why this pooling."""

    modes: tuple[str, ...] = ("mean",)
    normalize: bool = False
    source: str = "default: mean over attended tokens (the checkpoint names no pooling)"

    def __post_init__(self) -> None:
        bad = [mode for mode in self.modes if mode not in MODES]
        if not self.modes or bad:
            raise BadInputError(f"pooling modes {list(self.modes)}: choose from {','.join(MODES)} (--pooling)")


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """What a sentence-transformers folder says about its pipeline."""

    pooling: Pooling
    max_seq_length: int | None = None
    do_lower_case: bool = False


def parse_modes(value: str) -> tuple[str, ...]:
    """``--pooling cls`` or ``mean,max`` -> the modes; BadInputError naming the valid ones."""
    modes = tuple(item.strip() for item in value.split(",") if item.strip())
    Pooling(modes)  # validates
    return modes


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BadInputError(f"cannot read {path}: {error}") from error


def _pooling_modes(config: dict[str, Any], where: Path) -> tuple[str, ...]:
    if "pooling_mode" in config:
        value = config["pooling_mode"]
        modes = (value,) if isinstance(value, str) else tuple(value)
    else:
        modes = tuple(mode for key, mode in LEGACY_KEYS.items() if config.get(key)) or ("mean",)
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise BadInputError(f"{where} asks for pooling {unknown}, which the toolkit cannot compute (it knows {','.join(MODES)})")
    return modes  # ``include_prompt`` changes nothing here: the served path never prepends a prompt


def _check_prompts(folder: Path) -> None:
    settings = folder / "config_sentence_transformers.json"
    if settings.is_file():
        default = _read_json(settings).get("default_prompt_name")
        if default:
            raise BadInputError(
                f"{settings} prepends the prompt {default!r} to every text; the served ensemble sends texts as they come, "
                "so its embeddings would differ: prepend the prompt in your client and remove default_prompt_name"
            )


def read_sentence_transformers(folder: Path) -> SentenceTransformersConfig | None:
    """The pipeline of a sentence-transformers folder, or None when ``folder`` has no ``modules.json``.

    BadInputError (with the module or setting) when the pipeline holds anything but Transformer -> Pooling
    [-> Normalize], or a pooling mode or default prompt the served path cannot reproduce.
    """
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file)
    kinds = [str(module.get("type", "")).rsplit(".", 1)[-1] for module in modules]
    unsupported = [kind for kind in kinds if kind not in HONOURED_MODULES]
    if unsupported or not kinds or kinds[0] != "Transformer":
        raise BadInputError(
            f"{modules_file} holds modules {kinds}; the toolkit serves Transformer -> Pooling [-> Normalize] only "
            f"and cannot reproduce {unsupported or kinds}: serve the base model with --pooling, or export that pipeline yourself"
        )
    _check_prompts(folder)
    pooling_module = next((m for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    modes: tuple[str, ...] = ("mean",)
    if pooling_module is not None:
        pooling_file = folder / str(pooling_module.get("path", "")) / "config.json"
        modes = _pooling_modes(_read_json(pooling_file), pooling_file) if pooling_file.is_file() else ("mean",)
    normalize = "Normalize" in kinds
    settings_file = folder / "sentence_bert_config.json"
    settings = _read_json(settings_file) if settings_file.is_file() else {}
    source = f"sentence-transformers: {modules_file.name} ({' -> '.join(kinds)})"
    return SentenceTransformersConfig(Pooling(modes, normalize, source), _max_seq_length(folder, settings), bool(settings.get("do_lower_case")))


def _max_seq_length(folder: Path, settings: dict[str, Any]) -> int | None:
    """Where sentence-transformers truncates: ``sentence_bert_config.json``'s ``max_seq_length`` (older folders),
    else the tokenizer's ``model_max_length`` (where sentence-transformers 6 keeps it), when it is a real limit."""
    if settings.get("max_seq_length"):
        return int(settings["max_seq_length"])
    tokenizer_file = folder / "tokenizer_config.json"
    limit = _read_json(tokenizer_file).get("model_max_length") if tokenizer_file.is_file() else None
    return int(limit) if isinstance(limit, int | float) and 0 < limit < 1_000_000 else None


def resolve_pooling(checkpoint: SentenceTransformersConfig | None, modes: tuple[str, ...] | None, normalize: bool | None) -> Pooling:
    """The checkpoint's own pooling (or the default), with ``--pooling`` / ``--normalize`` overriding it."""
    base = checkpoint.pooling if checkpoint else Pooling()
    if modes is None and normalize is None:
        return base
    overridden = [flag for flag, value in (("--pooling", modes), ("--normalize", normalize)) if value is not None]
    return Pooling(modes or base.modes, base.normalize if normalize is None else normalize, f"{' and '.join(overridden)} (over: {base.source})")


def pool(states: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """``sentence_embedding`` of right-padded ``states`` [batch, seq, hidden] as sentence-transformers computes it."""
    import torch

    keep = attention_mask.unsqueeze(-1).to(states.dtype)
    count = keep.sum(dim=1, keepdim=True).clamp(min=1.0)
    parts = []
    for mode in pooling.modes:
        if mode == "cls":
            parts.append(states[:, 0])
        elif mode == "max":
            parts.append(torch.where(keep > 0, states, torch.full_like(states, float("-inf"))).amax(dim=1))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            # Weights first, then one sum (kept FP32 by the hybrid policy): no intermediate exceeds the states.
            weights = keep / (count if mode == "mean" else count.sqrt())
            parts.append((states * weights).sum(dim=1))
        elif mode == "weightedmean":
            positions = attention_mask.cumsum(dim=1).unsqueeze(-1).to(states.dtype) * keep  # 1..n on attended tokens
            parts.append((states * (positions / positions.sum(dim=1, keepdim=True))).sum(dim=1))
        else:  # lasttoken: one-hot of each row's last attended position, then one batched MatMul
            counts = attention_mask.cumsum(dim=1)
            last = ((counts == counts[:, -1:]) & (attention_mask > 0)).to(states.dtype)
            parts.append(torch.matmul(last.unsqueeze(1), states).squeeze(1))
    embedding = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    if pooling.normalize:
        # x / max(||x||, eps), as torch.nn.functional.normalize, from a sum of squares the hybrid policy keeps in FP32.
        embedding = embedding / (embedding * embedding).sum(dim=-1, keepdim=True).sqrt().clamp(min=1e-12)
    return embedding
