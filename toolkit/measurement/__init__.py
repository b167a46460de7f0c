"""The measurement layer shared by the build, the client, perf and the scripts: comparison of outputs
(``compare``), engine timing (``timing``, ``isolated``) and device detection (``device``)."""
