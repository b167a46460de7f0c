"""Rebuild the fused hybrid variant of a built model in place and compare fp16/hybrid with fp32 on the GPU.

Usage (on the GPU machine, after `scripts/gpu_pipeline.sh build`): python3 scripts/gpu_hybrid_check.py MODEL
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnx

from perf.inputs import batch_arrays
from toolkit.engines.onnxrt import session_for
from toolkit.models.export import cosine_rows
from toolkit.names import Precision
from toolkit.precision import fused_variant_from_fp32, precision_census, save_onnx
from toolkit.repository.lookup import find_tokenizer

name = sys.argv[1]
repo = Path("model_repository")
graph = fused_variant_from_fp32(onnx.load(f"build/{name}/export/fused.onnx"), Precision.HYBRID)
print(
    json.dumps(
        {
            k: v
            for k, v in precision_census(graph).items()
            if k in ("Attention", "SkipLayerNormalization", "EmbedLayerNormalization", "LayerNormalization", "MatMul")
        }
    )
)
save_onnx(graph, repo / f"{name}_hybrid_onnx" / "1" / "model.onnx")
for batch, seq in ((1, 128), (8, 512)):
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if "bert" in name else [])
    inputs = batch_arrays(find_tokenizer(repo, name, None), tuple(names), batch, seq)
    outs = {p: session_for(repo / f"{name}_{p}_onnx" / "1" / "model.onnx", "cuda").run(None, inputs)[0] for p in ("fp32", "fp16", "hybrid")}
    for p in ("fp16", "hybrid"):
        c = cosine_rows(outs["fp32"], outs[p])
        print(
            json.dumps(
                {
                    "model": name,
                    "batch": batch,
                    "seq": seq,
                    "precision": p,
                    "cosine_min": float(np.nanmin(c)),
                    "cosine_mean": float(np.nanmean(c)),
                    "nan": int(np.isnan(outs[p]).sum()),
                    "inf": int(np.isinf(outs[p]).sum()),
                    "max_abs": float(np.nanmax(np.abs(outs["fp32"] - outs[p]))),
                }
            ),
            flush=True,
        )
