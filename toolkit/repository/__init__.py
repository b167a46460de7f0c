"""Triton model repository: model names (``naming``), configs as protobuf messages (``configs``), folders and
validation (``layout``), the all-or-nothing install of a build (``install``), and what clients and perf read
back (``lookup``)."""
