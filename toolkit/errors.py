"""The project's exceptions: one base, a few kinds. Messages say the value, the rule and the fix."""

from __future__ import annotations


class ToolkitError(Exception):
    """Base of every error the toolkit reports to users as one line."""


class BadInputError(ToolkitError, ValueError):
    """A setting or an input breaks a rule (unknown precision, impossible shape, missing folder...)."""


class ExportMismatchError(ToolkitError):
    """An exported graph disagrees with the PyTorch model beyond tolerance."""


class DependencyMissingError(ToolkitError, ImportError):
    """An optional dependency (TensorRT, onnxruntime-gpu, ...) is not installed."""


class ServerError(ToolkitError):
    """The Triton server failed to start, load a model or answer."""


class BuildError(ToolkitError):
    """A build step (export, conversion, engine build, repository write) failed."""
