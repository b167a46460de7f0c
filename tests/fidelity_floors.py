"""The tests' fidelity floors: each is a cosine the code measured, loosened by one order of magnitude in 1 - cosine.

``floor(measured)`` = 1 - 10 * (1 - measured). A variant that became ten times lossier than it is today
fails; one that merely drifts in the last digits does not. Cosines are per token (``last_hidden_state`` /
``logits`` rows) unless a comment says otherwise, and were measured on this project's CPU machines
(ONNX Runtime's CPU provider, code of the commit that added this file), printed by the very test that
asserts them. When a change moves a number on purpose, measure again and update it here.
"""

from __future__ import annotations

MARGIN = 10.0  # in 1 - cosine


def floor(measured: float, margin: float = MARGIN) -> float:
    """The lowest cosine a test accepts where the code measured ``measured``."""
    return 1.0 - margin * (1.0 - measured)


# The real-text fixture of the MiniLM floors below (tests/test_precision.py, tests/engines/test_tensorrt.py).
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Triton serves models over gRPC and HTTP.",
    "A cup of tea on a rainy afternoon is hard to beat.",
    "The committee postponed its decision until the next meeting in March.",
]
# tests/test_precision.py: the real MiniLM-L6 (6 layers) on SENTENCES, per token against FP32.
MINILM_HYBRID = floor(0.99999935)  # measured 0.999999353
MINILM_FP16 = floor(0.9999989)  # measured 0.999998886
# tests/test_precision.py: MiniLM-L6 with one residual channel of 30000 (FP16 gives NaN there).
OUTLIER_HYBRID = floor(0.9999966)  # measured 0.999996653
# tests/client/test_overflow.py: the tiny BERT whose frequent tokens' embeddings sum past FP16's range, real text.
EMBEDDING_OVERFLOW_HYBRID = floor(0.9999996)  # measured 0.999999691 (text), 0.999999748 (random ids)
# tests/client/test_overflow_served.py: outlier MiniLM (2 layers) through Triton, sentence_embedding per sentence.
SERVED_OUTLIER_HYBRID = floor(0.9999996)  # measured 0.99999964 (float32 cosine of the two embeddings)
# tests/perf/test_engine_grid.py: the outlier MiniLM's hybrid engine at b1/b2 x s8/s16, the grid's cosine_min.
GRID_OUTLIER_HYBRID = floor(0.9999997)  # measured 0.99999973 at b1 s8 and b2 s8 (0.99999976 at b1 s16)
# tests/client/test_server_client.py: the real MiniLM through Triton, b8 s128, per token, by input kind.
SERVED_MINILM_HYBRID = {
    "text": floor(0.9999982),  # measured 0.999998248
    "sentences": floor(0.9999993),  # measured 0.999999351
}
# tests/client/test_server_client.py: the tiny random BERT (last_hidden_state) and GPT-2 (logits) served through
# Triton, worst record over b1/b4 x s8/s24 x random ids, text and sentences.
SERVED_TINY = {
    ("tinybert", "fp16"): floor(0.99999959),  # measured 0.999999587 (text)
    ("tinybert", "hybrid"): floor(0.99999966),  # measured 0.999999662 (sentences)
    ("tinygpt2", "fp16"): floor(0.9999998),  # measured 0.999999804 (text)
    ("tinygpt2", "hybrid"): floor(0.99999964),  # measured 0.999999644 (random ids)
}
# FP32 against FP32 computed another way (PyTorch against its export, a fused graph against the unfused one, a
# served engine against the same graph run locally): only the order of float32 sums differs. Measured 1 - cosine:
# export checks (tests/models/test_export.py) MiniLM 1.0e-12, tiny GPT-2 1.6e-13, tiny BERT 4.9e-14; the fused
# tiny GPT-2 against its export 1.4e-13; served against local (MiniLM, the overflow BERT) exactly 0.
FP32_REORDERED = floor(1.0 - 1e-12)
# tests/engines/test_onnxrt_gpu.py (CPU part): the fused graphs' in-graph tail (sentence_embedding /
# next_token_logits) against the unfused FP32 export, tiny random BERT and GPT-2, example_inputs(3, 20).
FUSED_TAIL = {
    ("bert", "fp16"): floor(0.99999996),  # measured 0.999999957
    ("bert", "hybrid"): floor(0.999999993),  # measured 0.9999999934
    ("gpt2", "fp16"): floor(0.9999997),  # measured 0.999999752
    ("gpt2", "hybrid"): floor(0.9999998),  # measured 0.999999886
}
# tests/engines/test_onnxrt_gpu.py and tests/engines/test_tensorrt.py (GPU, not runnable here): the README's GPU
# grid (results/h100/grid.jsonl and results/h200/grid.jsonl, BERT-base and GPT-2, every batch x length point):
# hybrid cosine_min >= 0.9999991 (worst 0.99999906, GPT-2), FP16 0.99999832 (worst, BERT-base).
GPU = {"fp16": floor(0.9999983), "hybrid": floor(0.9999991)}
