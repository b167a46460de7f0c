"""Engine timings taken in a process that holds only that engine, as Triton serves it.

Triton gives each model instance a stub process of its own, so a served engine never shares its process
with another ONNX Runtime session. Timing several sessions in one process measures something else: on an
H100 (session 6, ``experiments_bert-base-uncased.json`` ``timing_conditions``), once a second CUDA session
had run in the process, BERT-base FP16's b1 s128 replay went from 486 to 536 us and stayed there after the
other session was freed; FP32's went from 1219 to 1285 us the same way. So each engine is timed here in a
freshly spawned process that loads it alone and walks every shape, sending one row per shape back as it
finishes; the caller takes outputs (for fidelity) in its own process, where timing no longer matters.

On CUDA a shape runs as the server runs it (``toolkit/backends/common/cuda_graphs.py``): I/O binding and, up
to ``graph_token_limit`` tokens, a CUDA graph replay; on the CPU, ``session.run``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from perf.results import failure
from toolkit.engines.onnxrt import Device

Shape = tuple[int, int]  # (batch, sequence length)


@dataclass(frozen=True)
class TimingJob:
    """One engine file timed at ``shapes`` on inputs cut by ``tokenizer`` (``names``; the engine's own input
    types win, so a variant taking INT32 gets INT32). ``budget`` is ``time_for``'s target seconds, min runs,
    max runs and warm-up calls; ``provider_options`` are extra CUDA EP options."""

    path: Path
    shapes: tuple[Shape, ...]
    tokenizer: Path
    names: tuple[str, ...]
    device: Device
    budget: tuple[float, int, int, int]
    graph_token_limit: int = 4096
    provider_options: dict[str, str] = field(default_factory=dict)


def _time_shapes(job: TimingJob, send: Callable[[dict[str, Any]], None]) -> None:
    from perf.engine_timing import time_for
    from perf.inputs import batch_arrays
    from toolkit.backends.common.cuda_graphs import NUMPY_OF_ORT

    if job.device == "cuda":
        from toolkit.backends.common.cuda_graphs import DeviceRunner, cuda_session
        from toolkit.engines.onnxrt import require_cuda

        require_cuda()
        session, refused = cuda_session(str(job.path), provider_options=job.provider_options)
        runner = DeviceRunner(session, max_graphs=0 if refused else 1 << 20)
    else:
        from toolkit.engines.onnxrt import session_for

        session = session_for(job.path, "cpu")
    types = {i.name: NUMPY_OF_ORT[i.type] for i in session.get_inputs()}
    for batch, seq in job.shapes:
        row: dict[str, Any] = {"batch_size": batch, "seq_len": seq}
        try:
            arrays = batch_arrays(job.tokenizer, list(job.names), batch, seq)
            feeds = {name: arrays[name].astype(dtype) for name, dtype in types.items()}
            if job.device == "cuda":
                graph = runner.max_graphs > 0 and batch * seq <= job.graph_token_limit
                slot = runner.slot(feeds, graph=graph)  # its buffers go when the next shape's slot replaces it
                timing = time_for(lambda: runner.launch(slot), *job.budget)  # noqa: B023 (called at once)
                row["cuda_graph"] = graph
            else:
                timing = time_for(lambda: session.run(None, feeds), *job.budget)  # noqa: B023
            row.update(status="ok", **timing.as_dict())
        except Exception as error:  # this shape's result; the next shapes may still run
            row.update(failure(error))
        send(row)


def _worker(job: TimingJob, connection: Connection) -> None:
    try:
        _time_shapes(job, connection.send)
    except Exception as error:  # no session: every shape gets this failure
        connection.send(failure(error))
    finally:
        connection.close()


def time_in_own_process(job: TimingJob, on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[Shape, dict[str, Any]]:
    """Each shape's timing row (status, median/p90/mean/min ms, runs, ``cuda_graph``) from a spawned process
    that loads only ``job.path``; ``on_row`` sees each row as it arrives (progress bars). A shape the
    process never reached (it crashed) gets an error row naming its exit code."""
    context = multiprocessing.get_context("spawn")  # a fresh process: no CUDA state inherited
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_worker, args=(job, sender), daemon=True)
    process.start()
    sender.close()  # the child holds the only sending end: recv() ends with EOFError once it exits
    rows: dict[Shape, dict[str, Any]] = {}
    whole: dict[str, Any] | None = None
    try:
        while True:
            row = receiver.recv()
            if "batch_size" not in row:
                whole = row
                continue
            rows[(row["batch_size"], row["seq_len"])] = row
            if on_row:
                on_row(row)
    except EOFError:
        pass
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
            process.join()
    for batch, seq in job.shapes:
        if (batch, seq) not in rows:
            lost = whole or {"status": "error", "error": f"the timing process of {job.path} exited ({process.exitcode}) before this shape"}
            rows[(batch, seq)] = {"batch_size": batch, "seq_len": seq, **lost}
            if on_row:
                on_row(rows[(batch, seq)])
    return rows


def time_shape(
    path: Path, shape: Shape, tokenizer: Path, names: tuple[str, ...], device: Device, runs: int, warmup: int, cuda_graph: bool = False
) -> dict[str, Any]:
    """One shape timed ``runs`` times after ``warmup`` calls, in a process of its own (``time_in_own_process``);
    on CUDA with a captured graph when ``cuda_graph``. Returns that shape's row without the shape (the caller's)."""
    job = TimingJob(path, (shape,), tokenizer, names, device, (0.0, runs, runs, warmup), graph_token_limit=(1 << 62) if cuda_graph else 0)
    row = time_in_own_process(job)[shape]
    return {key: value for key, value in row.items() if key not in ("batch_size", "seq_len")}
