"""Comma-separated option values (``--precisions fp16,hybrid``, ``--batch-sizes 1,8``), parsed one way for every CLI.

Errors are BadInputError naming the flag, which each CLI prints as its one-line error.
"""

from __future__ import annotations

from collections.abc import Collection

from toolkit.errors import BadInputError


def comma_items(value: str, flag: str, allowed: Collection[str] | None = None, allow_empty: bool = False) -> tuple[str, ...]:
    """The non-blank items of ``value``; each must be in ``allowed`` (when given), and there must be one
    unless ``allow_empty``."""
    items = tuple(item.strip() for item in value.split(",") if item.strip())
    if not items and not allow_empty:
        raise BadInputError(f"{flag} {value!r} is empty; give a comma-separated list")
    bad = [item for item in items if allowed is not None and item not in allowed]
    if bad:
        raise BadInputError(f"{flag} {','.join(bad)} not allowed; choose from {','.join(allowed or ())}")
    return items


def comma_ints(value: str, flag: str, allow_empty: bool = False, minimum: int = 1) -> tuple[int, ...]:
    """Integers >= ``minimum`` (positive by default) from ``value`` (at least one unless ``allow_empty``)."""
    expected = "positive integers, e.g. 1,8,32" if minimum == 1 else f"integers >= {minimum}, e.g. {minimum},{minimum + 4}"
    try:
        numbers = tuple(int(item) for item in comma_items(value, flag, allow_empty=allow_empty))
    except ValueError:
        raise BadInputError(f"{flag} {value!r}: expected comma-separated {expected}") from None
    if any(n < minimum for n in numbers):
        raise BadInputError(f"{flag} {value!r}: expected comma-separated {expected}")
    return numbers


def gpu_indices(value: str, flag: str, visible: int) -> tuple[int, ...]:
    """``all`` (every GPU of the ``visible`` ones) or comma-separated GPU indices >= 0, e.g. ``0,1``."""
    if value.strip() == "all":
        if visible < 1:
            raise BadInputError(f"{flag} all: no GPU is visible here (nvidia-smi); name the serving machine's GPUs, e.g. {flag} 0,1")
        return tuple(range(visible))
    try:
        indices = tuple(int(item) for item in comma_items(value, flag))
    except ValueError:
        raise BadInputError(f"{flag} {value!r}: expected all or comma-separated GPU indices, e.g. 0,1") from None
    if any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise BadInputError(f"{flag} {value!r}: expected distinct GPU indices >= 0, e.g. 0,1")
    return indices


def one_item(value: str, flag: str, why: str) -> str:
    """The single item of a list option where a command takes exactly one (``why`` says why, e.g. "a tune
    searches one model's serving options")."""
    items = comma_items(value, flag)
    if len(items) != 1:
        raise BadInputError(f"{flag} {value!r}: give exactly one ({why})")
    return items[0]


def batch_buckets(value: str, flag: str = "--batch-buckets") -> str:
    """One ``--batch-buckets`` spelling, checked: ``off``, ``pow2`` or an integer step >= 2 (``8``: batches padded to
    1, 2, 4, 8, 16, 24, ... rows); the rule is ``toolkit.runtimes.ort_device.bucket_step``'s."""
    from toolkit.runtimes.ort_device import bucket_step

    spelling = value.strip()
    try:
        if spelling in ("0", "1"):
            raise ValueError(spelling)
        bucket_step(spelling)
    except ValueError:
        raise BadInputError(f"{flag} {value!r}: expected off, pow2 or an integer step >= 2, e.g. 8 (pads batches to 1,2,4,8,16,24,... rows)") from None
    return spelling
