"""Real token ids and texts of an exact sequence length, from a ``tokenizer.json`` file.

perf_analyzer and the engine timings share these, so that a configuration's numbers come from the
same kind of input whether measured through Triton or outside it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.errors import BadInputError
from toolkit.names import ATTENTION_MASK, INPUT_IDS, TEXT, TOKEN_TYPE_IDS

if TYPE_CHECKING:
    import numpy as np
    from tokenizers import Tokenizer

from perf.text import TEXT as SHIPPED_TEXT
from toolkit.models.tokenizers import load_tokenizer_file


@lru_cache(maxsize=8)
def cached_tokenizer(path: Path) -> Tokenizer:
    """One tokenizer per file for the samplers below, which cut many shapes from one file and set its padding
    and truncation for each cut; whoever needs a tokenizer of its own calls ``load_tokenizer_file``."""
    return load_tokenizer_file(Path(path))


def _window_ids(tokenizer: Tokenizer, seq_len: int, offset: int) -> tuple[list[int], list[int]]:
    """Ids and type ids of ``seq_len`` tokens (special tokens included) starting ``offset`` words in."""
    words = SHIPPED_TEXT.split()
    text = " ".join((words[offset % len(words) :] + words) * (1 + seq_len // 200))
    tokenizer.no_padding()
    # The tokenizer's own truncation keeps its special tokens (BERT's [CLS] ... [SEP]).
    tokenizer.enable_truncation(max_length=seq_len)
    encoding = tokenizer.encode(text)
    if len(encoding.ids) < seq_len:
        raise BadInputError(f"shipped text gives {len(encoding.ids)} tokens, fewer than sequence length {seq_len}")
    return list(encoding.ids), list(encoding.type_ids)


def token_samples(tokenizer_path: Path, seq_len: int, n_samples: int) -> list[dict[str, list[int]]]:
    """``n_samples`` different windows of real text, each exactly ``seq_len`` tokens, unpadded."""
    if seq_len < 2:
        raise BadInputError(f"sequence length {seq_len} is below 2; pass --seq-lens 2 or more")
    tokenizer = cached_tokenizer(Path(tokenizer_path))
    samples = []
    for i in range(n_samples):
        ids, types = _window_ids(tokenizer, seq_len, offset=7 * i)
        samples.append({INPUT_IDS: ids, ATTENTION_MASK: [1] * seq_len, TOKEN_TYPE_IDS: types})
    return samples


def text_samples(tokenizer_path: Path, seq_len: int, n_samples: int) -> list[str]:
    """Texts that the same tokenizer turns into about ``seq_len`` tokens (special tokens included)."""
    tokenizer = cached_tokenizer(Path(tokenizer_path))
    texts = []
    for i in range(n_samples):
        ids, _ = _window_ids(tokenizer, seq_len, offset=7 * i)
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts


def batch_arrays(tokenizer_path: Path, input_names: Sequence[str], batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
    """INT64 arrays ``[batch_size, seq_len]`` per engine input, for engine-only timing."""
    import numpy as np

    samples = token_samples(tokenizer_path, seq_len, batch_size)
    return {name: np.array([s[name] for s in samples], dtype=np.int64) for name in input_names}


def perf_analyzer_data(tokenizer_path: Path, input_names: Sequence[str], seq_len: int, n_samples: int = 16) -> dict[str, Any]:
    """perf_analyzer ``--input-data`` JSON: one entry per sample, each of shape ``[seq_len]``.

    ``input_names == ("TEXT",)`` gives strings for a text-in ensemble; any other names give token ids.
    """
    if tuple(input_names) == (TEXT,):
        return {"data": [{TEXT: [t]} for t in text_samples(tokenizer_path, seq_len, n_samples)]}
    samples = token_samples(tokenizer_path, seq_len, n_samples)
    return {"data": [{n: {"content": s[n], "shape": [seq_len]} for n in input_names} for s in samples]}


def write_perf_analyzer_data(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as JSON at ``path`` (parents made) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path
