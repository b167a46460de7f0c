"""Performance measurement for the toolkit's Triton repository.

Stages, one module each: ``inputs`` (real token ids of an exact length), ``analyzer``
(perf_analyzer arguments, run and CSV parsing), ``engine_timing`` (engine-only ONNX Runtime and
PyTorch timings, memory), ``sweep`` (named sweeps, resumable results), ``report`` (REPORT.md and
plots). ``python -m perf`` is the command line.
"""
