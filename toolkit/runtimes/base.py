"""What every engine runtime plug-in provides (Polygraphy's ``backend/<runtime>/`` loader + runner, Model
Navigator's runner registry): one module per runtime under ``toolkit/runtimes/``, one class implementing
:class:`EngineRuntime`, registered in ``toolkit/runtimes/__init__.py``.

The build, the repository writer, serving and perf iterate over the registry and never branch on a
runtime's name: a runtime says whether it can run here (and why not), which ONNX graph it takes, how to
build its engine file, its Triton platform and file name, the files of its Python-based Triton backend,
and how to time an engine of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from toolkit.errors import BadInputError
from toolkit.measurement.timing import Device, Row, Shape, TimingJob


@dataclass(frozen=True)
class ShapeProfile:
    """One optimisation profile for every [batch, sequence] input (TensorRT's; others may ignore it)."""

    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 32
    min_seq: int = 32
    opt_seq: int = 128
    max_seq: int = 512

    def __post_init__(self) -> None:
        if self.min_batch < 1:
            raise BadInputError(f"batch size must be >= 1, got min batch {self.min_batch}: set --max-batch >= 1")
        if not self.min_batch <= self.opt_batch <= self.max_batch:
            raise BadInputError(
                f"batch profile needs min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}: fix --max-batch/--opt-batch"
            )
        if self.min_seq < 1 or not self.min_seq <= self.opt_seq <= self.max_seq:
            raise BadInputError(
                f"sequence profile needs 1 <= min <= opt <= max, got {self.min_seq}/{self.opt_seq}/{self.max_seq}: fix --min-seq/--opt-seq/--max-seq"
            )

    def shapes(self) -> tuple[Shape, Shape, Shape]:
        """(min, opt, max) shapes of a [batch, sequence] input."""
        return (self.min_batch, self.min_seq), (self.opt_batch, self.opt_seq), (self.max_batch, self.max_seq)


@dataclass(frozen=True)
class VariantGraphs:
    """One precision variant as ONNX files: ``standard`` (standard ONNX ops, any runtime parses it) and, when the
    build fuses, ``fused`` (ONNX Runtime's ``com.microsoft`` transformer ops)."""

    precision: str
    standard: Path
    fused: Path | None = None


@dataclass(frozen=True)
class BuildContext:
    """What an engine build may use besides the graphs: the shape profile and a folder for caches."""

    profile: ShapeProfile
    work_dir: Path


@dataclass(frozen=True)
class EngineBuild:
    """A built engine file and what the manifest records of it (file, hash, size, how it was made)."""

    path: Path
    record: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineServing:
    """How an engine model is served, for the runtime's part of its Triton config: instances on GPUs or CPUs (on
    each of ``gpus``, or on every GPU Triton sees), CPU threads (0: the runtime's default), CUDA graphs, the token
    inputs, the tokenizer's padded lengths (empty: any length) and the largest batch."""

    gpu: bool
    gpus: tuple[int, ...] | None
    instances: int
    intra_op_threads: int
    cuda_graphs: bool
    inputs: tuple[str, ...]
    buckets: tuple[int, ...]
    max_batch_size: int
    batch_buckets: str = "off"  # with CUDA graphs: batches padded to buckets, "pow2" or a step (our backends only)


def gpu_instance_groups(serving: EngineServing) -> list[dict[str, Any]]:
    """``instances`` GPU instances on each of ``serving.gpus`` (one group per GPU), or on every GPU Triton sees."""
    if serving.gpus is None:
        return [{"kind": "KIND_GPU", "count": serving.instances}]
    return [{"kind": "KIND_GPU", "count": serving.instances, "gpus": [gpu]} for gpu in serving.gpus]


class EngineRunner(Protocol):
    """A loaded engine (Polygraphy's runner): host arrays in, host arrays out."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: Mapping[str, np.ndarray], names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The outputs ``names`` (all by default) for ``feeds`` (extra inputs ignored)."""
        ...


class EngineRuntime(ABC):
    """An engine runtime: how its engines are built, served by Triton and timed."""

    name: ClassVar[str]  # registry key and the Triton backend folder its platform resolves to, e.g. "onnxruntime"
    platform: ClassVar[str]  # Triton ``platform``, e.g. "onnxruntime_onnx"
    model_file: ClassVar[str]  # Triton ``default_model_filename``, e.g. "model.onnx"
    suffix: ClassVar[str]  # engine model name suffix: ``minilm_fp16_<suffix>``
    ensemble_suffix: ClassVar[str]  # text ensemble suffix: ``minilm_fp16<ensemble_suffix>``
    takes_fused_graph: ClassVar[bool]  # True: ONNX Runtime's fused graph when the build made one; False: standard ops

    @abstractmethod
    def unavailable_reason(self) -> str | None:
        """Why engines of this runtime cannot be built or run here (with the install hint), or None."""

    @abstractmethod
    def backend_files(self) -> dict[str, Path]:
        """Files of the Python-based Triton backend that serves this platform when the native backend is absent:
        ``{file name in <backend-dir>/<name>/: source}``, ``model.py`` among them."""

    @abstractmethod
    def config_fields(self, serving: EngineServing) -> dict[str, Any]:
        """The runtime's fields of an engine model's Triton config (``instance_group``, ``parameters``,
        ``optimization``), written in what NVIDIA's native backend of its platform reads, so one repository serves
        in NVIDIA's container and on the Python-based backends (tests/repository/test_native_backends.py)."""

    def one_hop_backend(self) -> dict[str, Path] | None:
        """Files of a Python model that tokenizes and runs this runtime's engine in one hop (``model.py`` and the
        modules it imports by name), or None when the runtime has none."""
        return None

    @abstractmethod
    def build_engine(self, graphs: VariantGraphs, target: Path, context: BuildContext) -> EngineBuild:
        """Build this variant's engine file at ``target`` (a path without suffix; the runtime adds its own)."""

    @abstractmethod
    def time_job(self, job: TimingJob, on_row: Callable[[Row], None] | None = None) -> dict[Shape, Row]:
        """Each shape's timing row, measured in a process that holds only this engine (as Triton's stub does)."""

    @abstractmethod
    def load(self, path: Path, device: Device) -> EngineRunner:
        """The engine at ``path`` loaded on ``device`` in this process (outputs for fidelity, not timing)."""

    def memory_mib(self, path: Path, feeds: Mapping[str, np.ndarray], device: Device) -> float | None:
        """GPU memory the engine takes once loaded and run on ``feeds`` (None where it cannot be measured)."""
        return None

    def graph_for(self, graphs: VariantGraphs) -> Path:
        """The ONNX file this runtime builds from."""
        return graphs.fused if self.takes_fused_graph and graphs.fused is not None else graphs.standard
