"""Every command line of the project, walked: -h works, one concept has one spelling, the lists take commas and
repeats, the README, Makefile and GPU pipeline call only flags that exist, and a missing package reads as one."""

from __future__ import annotations

import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from toolkit.cli import MISSING_PACKAGE_EXIT, REQUIRED_MODULES
from toolkit.precision.policy import DEFAULT_KEEP_FP32, FUSED_FORMS

ROOT = Path(__file__).resolve().parents[1]
# How each command line is run (as the README writes it) -> (module or script, the click object's name).
ENTRY_POINTS = {
    "build_engines.py": ("build_engines", "main"),
    "-m client": ("client.cli", "cli"),
    "-m perf": ("perf.cli", "main"),
    "-m toolkit.serving": ("toolkit.serving.cli", "main"),
    "-m toolkit.repository": ("toolkit.repository.cli", "main"),
    "-m toolkit.precision": ("toolkit.precision.cli", "cli"),
    "-m toolkit.deploy": ("toolkit.deploy.cli", "main"),
    "scripts/family_bench.py": ("scripts/family_bench.py", "main"),
    "scripts/gpu_experiments.py": ("scripts/gpu_experiments.py", "main"),
}
# One concept, one spelling: the flag every command uses, and the spellings none may use.
SPELLINGS = {
    "--models": ("--model", "--model-name"),
    "--precisions": ("--precision",),
    "--runtimes": ("--runtime",),
    "--batch-sizes": ("--batch", "--batch-size", "--batches-sizes"),
    "--seq-lens": ("--seq", "--seq-len", "--sequence-length"),
    "--repository": ("--repo", "--model-repository", "--repository-dir"),
    "--out": ("--results-dir", "--output", "--out-dir"),
    "--url": ("--server", "--server-url", "--address"),
    "--plan": ("--sweep",),
    "--max-queue-delay-us": ("--queue-delay-us",),
    "--cuda-graphs": ("--cuda-graph",),
}
LISTS = ("--models", "--precisions", "--runtimes", "--batch-sizes", "--seq-lens")


def _command(entry: str) -> click.Command:
    module, attribute = ENTRY_POINTS[entry]
    if module.endswith(".py"):
        spec = importlib.util.spec_from_file_location(Path(module).stem, ROOT / module)
        assert spec is not None and spec.loader is not None
        loaded = importlib.util.module_from_spec(spec)
        sys.modules.setdefault(spec.name, loaded)  # their dataclasses look their module up there
        spec.loader.exec_module(loaded)
        return getattr(loaded, attribute)
    return getattr(importlib.import_module(module), attribute)


def _walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _walk(sub, (*path, name))


def _every_command() -> Iterator[tuple[str, tuple[str, ...], click.Command]]:
    for entry in ENTRY_POINTS:
        for path, command in _walk(_command(entry)):
            yield entry, path, command


def _flags(command: click.Command) -> set[str]:
    return {flag for param in command.params if isinstance(param, click.Option) for flag in (*param.opts, *param.secondary_opts)}


def test_every_command_answers_dash_h_when_asked() -> None:
    for entry, path, _ in _every_command():
        result = CliRunner().invoke(_command(entry), [*path, "-h"])
        assert result.exit_code == 0 and "Usage:" in result.output, (entry, path, result.output)
        assert "-h, --help" in result.output, (entry, path)


def test_every_concept_has_one_spelling_across_every_command() -> None:
    used: dict[str, set[str]] = {}
    for entry, path, command in _every_command():
        for flag in _flags(command):
            used.setdefault(flag, set()).add(" ".join((entry, *path)))
    for canonical, others in SPELLINGS.items():
        wrong = {flag: sorted(where) for flag, where in used.items() if flag in others}
        assert not wrong, f"{canonical} is spelled differently in {wrong}"
    assert "--precisions" in used and "--precision" not in used


def test_list_flags_take_commas_and_repeats_wherever_they_appear() -> None:
    for entry, path, command in _every_command():
        for param in command.params:
            if isinstance(param, click.Option) and set(param.opts) & set(LISTS):
                assert param.multiple, f"{entry} {' '.join(path)} {param.opts[0]} is not a toolkit.cli.list_option"


def test_list_option_hands_one_comma_joined_string_to_the_command_when_repeated() -> None:
    result = CliRunner().invoke(_command("-m client"), ["infer", "x", "--models", "a", "--precisions", "fp32,fp8", "--precisions", "int4"])
    assert result.exit_code == 2 and "fp8,int4 not allowed; choose from fp32,fp16,hybrid,auto" in result.output


def _documented_commands() -> Iterator[tuple[str, str, list[str]]]:
    """(file, entry, tokens after it) for every call of a project command line in the README, Makefile and pipeline."""
    pattern = re.compile(r"(build_engines\.py|-m (?:client|perf|toolkit\.\w+)|scripts/\w+\.py)\b([^|;&#`)]*)")
    for name in ("README.md", "Makefile", "scripts/gpu_pipeline.sh", "ARCHITECTURE.md"):
        for line in (ROOT / name).read_text().replace("\\\n", " ").splitlines():  # continued lines joined
            for match in pattern.finditer(line):
                entry = match.group(1)
                if entry in ENTRY_POINTS:
                    words = match.group(2).replace("\\", " ").split()
                    yield name, entry, words[: words.index("--")] if "--" in words else words


def test_readme_makefile_and_pipeline_call_only_flags_that_exist() -> None:
    checked = 0
    for name, entry, words in _documented_commands():
        command = _command(entry)
        path = []
        while isinstance(command, click.Group) and words and words[0] in command.commands:
            path.append(words[0])
            command = command.commands[words.pop(0)]
        known = _flags(command) | {"-h", "--help"}
        for word in words:
            flag = word.split("=")[0]
            if flag.startswith("--") and "$" not in flag and flag != "--":
                assert flag in known, f"{name}: {entry} {' '.join(path)} has no {flag} (it has {sorted(known)})"
                checked += 1
    assert checked > 40


@pytest.mark.parametrize(
    ("run", "blocked"),
    [
        (["build_engines.py", "--models", "minilm"], "click"),
        (["build_engines.py", "--models", "minilm", "--work-dir", "{tmp}/build", "--repository", "{tmp}/repo"], "numpy"),
        (["-m", "client", "models", "--retries", "0"], "tritonclient"),
        (["-m", "client", "-h"], "click"),
        (["-m", "perf", "-h"], "click"),
        (["-m", "toolkit.serving", "status"], "numpy"),
        (["-m", "toolkit.repository", "-h"], "click"),
        (["-m", "toolkit.precision", "-h"], "click"),
        (["-m", "toolkit.deploy", "-h"], "numpy"),
    ],
)
def test_entry_point_names_the_missing_package_and_the_fix_in_one_line_when_an_import_fails(
    run: list[str], blocked: str, tmp_path: Path
) -> None:
    """The package is made absent the way Python reports it (``sys.modules[name] = None``), then the command runs
    as ``python -m ...`` or as a script would; click itself, a package a command imports lazily (numpy in the build,
    tritonclient in the client) and one a package's ``__init__`` would import (numpy)."""
    run = [word.replace("{tmp}", str(tmp_path)) for word in run]
    start = f"runpy.run_module({run[1]!r}, run_name='__main__', alter_sys=True)" if run[0] == "-m" else f"runpy.run_path({run[0]!r}, run_name='__main__')"
    argv = [run[1] if run[0] == "-m" else run[0], *run[2 if run[0] == "-m" else 1 :]]
    code = f"import runpy, sys; sys.modules[{blocked!r}] = None; sys.argv = {argv!r}; {start}"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    command = " ".join(run[:2]) if run[0] == "-m" else run[0]
    assert done.returncode == MISSING_PACKAGE_EXIT, done.stderr
    expected = (
        rf"error: the Python running this \({re.escape(sys.executable)}\) has no package {re.escape(REQUIRED_MODULES[blocked])} "
        rf"\(import {blocked}(\.\w+)* failed\): run `make setup` once, then `\.venv/bin/python {re.escape(command)} \.\.\.` "
        rf"\(or `source \.venv/bin/activate` first\)"
    )
    (line,) = done.stderr.splitlines()
    assert re.fullmatch(expected, line), line


def test_every_module_named_as_required_is_installed_by_make_setup() -> None:
    for module, package in REQUIRED_MODULES.items():
        assert metadata.version(package), module


def test_keep_fp32_help_lists_every_op_type_the_hybrid_policy_keeps() -> None:
    (option,) = [p for p in _command("build_engines.py").params if p.name == "keep_fp32"]
    assert isinstance(option, click.Option) and option.help
    for op in (*DEFAULT_KEEP_FP32, *(form for forms in FUSED_FORMS.values() for form in forms)):
        assert op in option.help, op
    assert ",".join(DEFAULT_KEEP_FP32) in option.help  # the default, as one would pass it


def test_documented_commands_are_found_by_the_parser() -> None:
    """Guards the flag check above against a pattern that silently matches nothing."""
    entries = {entry for _, entry, _ in _documented_commands()}
    assert {"build_engines.py", "-m client", "-m perf", "-m toolkit.serving", "-m toolkit.precision"} <= entries
    assert any(shlex.join(words).startswith("fidelity --models minilm") for _, entry, words in _documented_commands() if entry == "-m client")
