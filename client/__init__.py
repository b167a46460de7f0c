"""Client side of the toolkit: typed Triton client (:mod:`client.api`), inputs and fidelity.

Heavy modules (tritonclient, onnxruntime, tokenizers) load only when a function needs them.
"""
