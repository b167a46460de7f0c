"""Performance measurement for the toolkit's Triton repository; ``python -m perf`` is the command line.

Measuring:

- ``inputs``: real token ids and texts of an exact sequence length (``text``: the shipped English they come from).
- ``analyzer``: perf_analyzer's arguments, its run, and its CSV report parsed.
- ``server_stats``: each Triton model's server time per request, from the statistics API.
- ``sweep``: named sweeps through Triton (perf_analyzer), resumable; the CPU baseline, engine sizes, derived ratios.
- ``engine_timing``: engine-only timings of one shape outside Triton (``python -m perf engine``).
- ``engine_grid``: the engine-only grid, every precision x batch x length, timed and compared with FP32.
- ``torch_models``: the PyTorch eager baseline of a built model, rebuilt from its manifest.
- ``environment``: the hashes of the repository's build manifests that tie a record to a build.

Results and the report:

- ``records``: every kind of record, one frozen dataclass each, with a schema version and one key.
- ``results``: the ``results/<device>/`` files, one JSON record per line; typed readers and writers.
- ``targets``: the GPU targets checked against one device folder's records.
- ``grid_report``: the report's sections from the engine-only grid, and GPUs side by side.
- ``report``: ``results/REPORT.md`` and its plots from every device folder.
- ``plots``: Markdown tables and matplotlib plots.
- ``cli`` (and ``__main__``): the click commands.
"""
