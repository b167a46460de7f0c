"""Model families: one plug-in module each (``bert.py``, ``roberta.py``, ``xlm_roberta.py``, ``distilbert.py``,
``mpnet.py``, ``modernbert.py``, ``gpt2.py``), one interface (``base.ModelFamily``). Adding a family is one module here, its
shipped config in ``toolkit/models/configs/`` and tests; nothing outside this folder branches on a family.
"""

from __future__ import annotations

from toolkit.errors import BadInputError
from toolkit.models.families import bert, distilbert, gpt2, modernbert, mpnet, roberta, xlm_roberta
from toolkit.models.families.base import CAUSAL_LM, CLASSIFICATION, EMBEDDING, CausalLMFamily, EncoderFamily, ModelFamily

FAMILIES: dict[str, ModelFamily] = {
    plugin.name: plugin
    for plugin in (bert.FAMILY, roberta.FAMILY, xlm_roberta.FAMILY, distilbert.FAMILY, mpnet.FAMILY, modernbert.FAMILY, gpt2.FAMILY)
}
FOLDER = "toolkit/models/families/"


def family_for_model_type(model_type: str, spec: str) -> ModelFamily:
    """The family covering transformers' ``model_type``; BadInputError naming the supported ones otherwise."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for family in FAMILIES.values() for t in family.model_types)
    raise BadInputError(
        f"model '{spec}' has architecture '{model_type}'; supported: {supported} (a family is added as one module under {FOLDER})"
    )


def family_named(name: str) -> ModelFamily:
    """The family a manifest names; BadInputError listing the registered ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise BadInputError(f"unknown model family {name!r}: registered are {', '.join(FAMILIES)} ({FOLDER})") from None


def offline_ids() -> tuple[str, ...]:
    """Hub ids whose config ships with the toolkit: they build offline with --random-weights."""
    return tuple(spec for family in FAMILIES.values() for spec in family.shipped_configs)


__all__ = [
    "CAUSAL_LM",
    "CLASSIFICATION",
    "EMBEDDING",
    "FAMILIES",
    "CausalLMFamily",
    "EncoderFamily",
    "ModelFamily",
    "family_for_model_type",
    "family_named",
    "offline_ids",
]
