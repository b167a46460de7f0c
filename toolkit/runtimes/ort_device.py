"""ONNX Runtime CUDA runs on device buffers kept per input shape, with one CUDA graph per shape.

Shared by the Triton ``onnxruntime`` backend (copied beside its ``model.py`` and imported by this module
name) and by the runtime plug-in's timing (``toolkit.runtimes.onnxruntime``), so the numbers the grid reports
come from the code path the server runs. Needs only numpy and onnxruntime(-gpu): no Triton, no toolkit imports.
Every ONNX Runtime session of the toolkit is made here (``cpu_session``, ``cuda_session``).

ONNX Runtime replays a captured graph only on the device addresses it was captured with, so each
shape gets its own bound input and output buffers ("slot") and its own ``gpu_graph_id``. A session
made with the CUDA EP option ``enable_cuda_graph=1`` captures a graph at a slot's first runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

NUMPY_OF_ORT = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64, "tensor(int32)": np.int32}
NO_GRAPH = -1  # ORT's run option value for "run this call without a graph" in a graph-enabled session
BUCKETS_OFF, BUCKETS_POW2 = "off", "pow2"


def bucket_step(value: str | None) -> int | None:
    """A batch-bucket spelling (``--batch-buckets`` of every CLI, the config parameter ``cuda_graph_batch_buckets``)
    as the step ``bucket_rows`` pads with: None for ``off`` (also "0" or no value), 0 for ``pow2`` (powers of two;
    also "1", as repositories written before steps existed say it), N for an integer N >= 2 (powers of two up to N
    rows, then multiples of N). ValueError naming the spellings for anything else."""
    if value in (None, "", "0", BUCKETS_OFF):
        return None
    if value in ("1", BUCKETS_POW2):
        return 0
    step = int(value) if str(value).isdigit() else 0
    if step < 2:
        raise ValueError(f"batch buckets {value!r}: expected {BUCKETS_OFF}, {BUCKETS_POW2} or an integer step >= 2 (e.g. 8)")
    return step


def bucket_spelling(value: str | None) -> str:
    """``value`` (a spelling ``bucket_step`` reads, the legacy "0" and "1" included) in ``--batch-buckets`` spelling:
    ``off``, ``pow2`` or the step."""
    step = bucket_step(value)
    return BUCKETS_OFF if step is None else BUCKETS_POW2 if step == 0 else str(step)


def bucket_rows(rows: int, step: int | None) -> int:
    """``rows`` padded up to its batch bucket: unchanged with step None; the next power of two with step 0, or while
    that is at most ``step`` rows; past it, the next multiple of ``step`` (step 8: 1, 2, 4, 8, 16, 24, 32, ...)."""
    if step is None or rows <= 1:
        return rows
    power = 1 << (rows - 1).bit_length()
    return power if step == 0 or power <= step else -(-rows // step) * step


@dataclass(frozen=True)
class Placement:
    """Where a Triton model instance runs its engine: CUDA device ``device_id``, or the CPU (with why, when the
    instance asked for a GPU and got none)."""

    cuda: bool
    device_id: int
    warning: str | None = None


def placement(instance_kind: str | None, device_id: str | int | None, providers: list[str]) -> Placement:
    """The placement of a Triton instance from what Triton hands ``initialize`` (``model_instance_kind``,
    ``model_instance_device_id``) and the providers this onnxruntime build has: a KIND_GPU instance runs on its own
    GPU when the CUDA provider exists (so instances on GPUs 0 and 1 each use their own), else on the CPU."""
    device = int(device_id or 0)
    if instance_kind != "GPU":
        return Placement(False, device)
    if "CUDAExecutionProvider" not in providers:
        return Placement(False, device, "KIND_GPU but onnxruntime has no CUDA provider; using CPU")
    return Placement(True, device)


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: ONNX Runtime's default
    options.log_severity_level = 3  # callers report failures themselves
    return options


def cpu_session(path: str, threads: int = 0) -> ort.InferenceSession:
    """A CPU-provider session on ``path`` (``threads`` 0 lets ONNX Runtime choose)."""
    return ort.InferenceSession(path, _options(threads), providers=["CPUExecutionProvider"])


def cuda_session(
    path: str, device_id: int = 0, graphs: bool = True, threads: int = 0, provider_options: dict[str, str] | None = None
) -> tuple[ort.InferenceSession, str | None]:
    """A CUDA-EP session on ``path`` with TF32 off (FP32 stays the FP32 the references compute) and, with
    ``graphs``, CUDA graphs enabled; returns it and why graphs were refused (None when they were not).

    ``provider_options`` adds CUDA EP options (e.g. ``sdpa_kernel``). ONNX Runtime refuses graphs when a
    node falls back to the CPU: the session is then made without them.
    """
    options = _options(threads)

    def make(enable: bool) -> ort.InferenceSession:
        cuda = {**(provider_options or {}), "device_id": str(device_id), "use_tf32": "0", "enable_cuda_graph": "1" if enable else "0"}
        return ort.InferenceSession(path, options, providers=[("CUDAExecutionProvider", cuda), "CPUExecutionProvider"])

    if not graphs:
        return make(False), None
    try:
        return make(True), None
    except Exception as error:
        return make(False), str(error)


@dataclass
class Slot:
    """Device buffers bound for one input shape, and the run options that pick its CUDA graph (``graph_id``
    > 0 when runs replay one). Inputs of one dtype and shape (token ids, mask, type ids) share one buffer,
    ``packed`` [inputs, batch, seq], each input bound to its slice: one host-to-device copy per run instead of one
    per input (``inputs`` is then empty)."""

    graph_id: int
    inputs: dict[str, Any]
    outputs: list[Any]
    binding: Any
    run_options: Any
    packed: Any = None


class DeviceRunner:
    """Runs one CUDA-EP session through I/O binding; ``max_graphs`` shapes get CUDA graphs.

    ``max_graphs`` = 0 runs without graphs (and the session need not enable them). Shapes past the
    graph budget run on fresh buffers without a graph, so a long tail of shapes cannot exhaust memory.
    With ``batch_buckets`` (and graphs), a batch is padded up to its bucket (``bucket_rows``; copies of its last
    row, cut off the outputs): a server forms every batch size from 1 to its maximum, which would otherwise fill
    the graph budget with the first sizes it saw and run the rest, often the largest, without a graph. Powers of
    two (``pow2``) pad 17 rows to 32; a step of 8 pads them to 24, for a few more graphs.
    Inputs of one dtype and shape share one device buffer (``Slot.packed``; ``pack_inputs`` False: one each).
    ``device`` "cpu" runs the same binding on a CPU session (the tests' way to check it without a GPU).
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        device_id: int = 0,
        max_graphs: int = 16,
        batch_buckets: str | None = None,
        device: str = "cuda",
        pack_inputs: bool = True,
    ) -> None:
        self.session, self.device_id, self.max_graphs, self.device = session, device_id, max_graphs, device
        self.pack_inputs = pack_inputs
        self.bucket_step = bucket_step(batch_buckets) if max_graphs > 0 else None
        self.output_meta = [(o.name, NUMPY_OF_ORT.get(o.type, np.float32), list(o.shape)) for o in session.get_outputs()]
        self.output_index = {name: i for i, (name, _, _) in enumerate(self.output_meta)}
        self.slots: dict[tuple[Any, ...], Slot] = {}
        self.graphs = 0

    @staticmethod
    def shape_key(feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
        return tuple((name, array.shape) for name, array in feeds.items())

    def output_shapes(self, batch: int, seq: int) -> list[list[int]]:
        """Output shapes for inputs of [batch, seq]: axis 0 is the batch, other symbolic axes the sequence.

        True of the engines this toolkit builds (encoder states, pooled vectors, decoder logits).
        """
        return [
            [batch if axis == 0 else (d if isinstance(d, int) else seq) for axis, d in enumerate(dims)] for _, _, dims in self.output_meta
        ]

    def slot(self, feeds: dict[str, np.ndarray], graph: bool) -> Slot:
        """New device buffers for ``feeds``' shape (holding a copy of ``feeds``), bound for runs."""
        batch, seq = next(iter(feeds.values())).shape[:2]
        binding = self.session.io_binding()
        inputs, packed = self._bind_inputs(binding, feeds)
        outputs = []
        for (name, dtype, _), shape in zip(self.output_meta, self.output_shapes(batch, seq), strict=True):
            value = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, self.device, self.device_id)
            binding.bind_ortvalue_output(name, value)
            outputs.append(value)
        graph_id = NO_GRAPH
        if graph:
            self.graphs += 1
            graph_id = self.graphs  # graph id 0 is ORT's default graph: start at 1
        run_options = ort.RunOptions()  # made once per slot: every request of this shape reuses it
        if self.max_graphs:
            run_options.add_run_config_entry("gpu_graph_id", str(graph_id))
        return Slot(graph_id, inputs, outputs, binding, run_options, packed)

    def _bind_inputs(self, binding: Any, feeds: dict[str, np.ndarray]) -> tuple[dict[str, Any], Any]:
        """Device copies of ``feeds`` bound as the session's inputs: one packed buffer when they share dtype and shape
        (returned second, with no per-input values), else one buffer each."""
        arrays = list(feeds.values())
        first = arrays[0]
        if self.pack_inputs and len(arrays) > 1 and all(a.dtype == first.dtype and a.shape == first.shape for a in arrays):
            packed = ort.OrtValue.ortvalue_from_numpy(np.stack(arrays), self.device, self.device_id)
            for index, name in enumerate(feeds):
                binding.bind_input(name, self.device, self.device_id, first.dtype.type, list(first.shape), packed.data_ptr() + index * first.nbytes)
            return {}, packed
        inputs = {n: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a), self.device, self.device_id) for n, a in feeds.items()}
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        return inputs, None

    def launch(self, slot: Slot) -> None:
        """One run on the slot's buffers (replaying its graph once captured); returns when done."""
        self.session.run_with_iobinding(slot.binding, slot.run_options)
        slot.binding.synchronize_outputs()

    def fetch(self, slot: Slot, names: list[str] | None = None) -> list[np.ndarray]:
        """The slot's outputs (all, or ``names`` in that order) copied to host arrays."""
        if names is None:
            return [value.numpy() for value in slot.outputs]
        return [slot.outputs[self.output_index[name]].numpy() for name in names]

    @staticmethod
    def load(slot: Slot, feeds: dict[str, np.ndarray]) -> None:
        """Copy new host inputs of the slot's shape (and input order) into its device buffers."""
        if slot.packed is not None:
            slot.packed.update_inplace(np.stack(list(feeds.values())))
            return
        for name, array in feeds.items():
            slot.inputs[name].update_inplace(np.ascontiguousarray(array))

    def run(self, feeds: dict[str, np.ndarray], names: list[str] | None = None, mark: Callable[[str], None] | None = None) -> list[np.ndarray]:
        """Host inputs in, host outputs (all, or ``names``) out, through this shape's slot (made on first use).

        Outputs not named stay on the device: GPT-2's full logits need not cross to the host for its next token.
        ``mark(phase)``, when given, is called after each phase: ``upload`` (padding included), ``engine``, ``download``.
        """
        mark = mark or _no_mark
        rows = next(iter(feeds.values())).shape[0]
        padded = bucket_rows(rows, self.bucket_step)
        if padded > rows:
            feeds = {name: np.concatenate([array, np.repeat(array[-1:], padded - rows, axis=0)]) for name, array in feeds.items()}
        key = self.shape_key(feeds)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slot(feeds, graph=len(self.slots) < self.max_graphs)
            if slot.graph_id != NO_GRAPH:
                self.slots[key] = slot
        else:
            self.load(slot, feeds)
        mark("upload")
        self.launch(slot)
        mark("engine")
        values = self.fetch(slot, names)
        mark("download")
        return values if padded == rows else [value[:rows] for value in values]


def _no_mark(_: str) -> None:
    pass
