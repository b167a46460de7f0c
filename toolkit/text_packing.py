"""Texts packed from consecutive lines: each text joins lines (wrapping round the file) until it holds at least
``seq`` tokens, so a measured row is all real tokens. Used by the precision tools' data sets and the client's
inputs, each with its own tokenizer, which only gives the lines' token counts here."""

from __future__ import annotations

from collections.abc import Sequence


def packed_lines(lines: Sequence[str], lengths: Sequence[int], count: int, seq: int, start: int = 0) -> list[str]:
    """``count`` texts of consecutive ``lines`` (``lengths``: their token counts without special tokens), each
    joined until it has >= ``seq`` tokens (a separating space counted as one), starting at line ``start``; a file
    too short for one text gives every line once per text."""
    texts: list[str] = []
    cursor = start % len(lines)
    for _ in range(count):
        parts: list[str] = []
        tokens = 0
        while tokens < seq and len(parts) < len(lines):
            parts.append(lines[cursor])
            tokens += lengths[cursor] + 1
            cursor = (cursor + 1) % len(lines)
        texts.append(" ".join(parts))
    return texts
