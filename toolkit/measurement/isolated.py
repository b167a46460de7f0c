"""Engine timings taken in a process that holds only that engine, as Triton serves it.

Triton gives each model instance a stub process of its own, so a served engine never shares its process
with another session. Timing several sessions in one process measures something else: on an H100
(``results/h100/NOTES.md``, ``timing_conditions``), once a second ONNX Runtime CUDA session had run in the
process, BERT-base FP16's b1 s128 replay went from 486 to 536 us and stayed there after the other session was
freed. So each engine is timed in a freshly spawned process that loads it alone and walks every shape,
sending one row per shape back as it finishes; the caller takes outputs (for fidelity) in its own process,
where timing no longer matters. What runs in that process is the runtime plug-in's ``worker``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.connection import Connection

from toolkit.measurement.timing import Row, Shape, TimingJob, failure

Send = Callable[[Row], None]
Worker = Callable[[TimingJob, Send], None]  # a module-level function: it is pickled into the spawned process


def _child(worker: Worker, job: TimingJob, connection: Connection) -> None:
    try:
        worker(job, connection.send)
    except Exception as error:  # nothing loaded: every shape gets this failure
        connection.send(failure(error))
    finally:
        connection.close()


def rows_in_own_process(worker: Worker, job: TimingJob, on_row: Callable[[Row], None] | None = None) -> dict[Shape, Row]:
    """Each shape's row (``batch_size``, ``seq_len``, status, timings) from ``worker(job, send)`` run in a
    spawned process; ``on_row`` sees each row as it arrives (progress bars). A shape the process never
    reached (it crashed, or failed before any shape) gets an error row saying so."""
    context = multiprocessing.get_context("spawn")  # a fresh process: no CUDA state inherited
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(worker, job, sender), daemon=True)
    process.start()
    sender.close()  # the child holds the only sending end: recv() ends with EOFError once it exits
    rows: dict[Shape, Row] = {}
    whole: Row | None = None
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
    for batch, seq in job.feeds:
        if (batch, seq) not in rows:
            lost = whole or {"status": "error", "error": f"the timing process of {job.path} exited ({process.exitcode}) before this shape"}
            rows[(batch, seq)] = {"batch_size": batch, "seq_len": seq, **lost}
            if on_row:
                on_row(rows[(batch, seq)])
    return rows
