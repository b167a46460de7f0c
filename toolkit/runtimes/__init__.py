"""Engine runtimes: one plug-in module each (``onnxruntime.py``, ``tensorrt.py``), one interface
(``base.EngineRuntime``). Adding a runtime is one module here plus its Python-based Triton backend under
``toolkit/backends/<name>/``; the build, the repository writer, serving and perf iterate over ``RUNTIMES``.
"""

from __future__ import annotations

from toolkit.errors import BadInputError
from toolkit.runtimes.base import BuildContext, EngineBuild, EngineRunner, EngineRuntime, ShapeProfile, VariantGraphs
from toolkit.runtimes.onnxruntime import OnnxRuntime
from toolkit.runtimes.tensorrt import TensorRT

RUNTIMES: dict[str, EngineRuntime] = {plugin.name: plugin for plugin in (OnnxRuntime(), TensorRT())}
DEFAULT_RUNTIME = OnnxRuntime.name


def runtime_names() -> tuple[str, ...]:
    """The registered runtimes' names, in registry order."""
    return tuple(RUNTIMES)


def get_runtime(name: str) -> EngineRuntime:
    """The plug-in called ``name``; BadInputError naming the registered ones and where a runtime is added."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise BadInputError(
            f"unknown runtime {name!r}: choose from {','.join(RUNTIMES)} (a runtime is added as one module under toolkit/runtimes/)"
        ) from None


__all__ = [
    "DEFAULT_RUNTIME",
    "RUNTIMES",
    "BuildContext",
    "EngineBuild",
    "EngineRunner",
    "EngineRuntime",
    "ShapeProfile",
    "VariantGraphs",
    "get_runtime",
    "runtime_names",
]
