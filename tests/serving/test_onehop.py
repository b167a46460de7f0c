"""The one-hop text model (``--one-hop``) beside the ensemble, on a real server: the same answers, batched."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from client.api import TritonTextClient
from toolkit.build import BuildRequest, build_model
from toolkit.errors import ServerError
from toolkit.measurement.compare import cosine_rows
from toolkit.names import SENTENCE_EMBEDDING, TRUNCATED, Precision
from toolkit.repository.configs import ServingOptions
from toolkit.repository.layout import read_configs
from toolkit.repository.naming import ensemble_model, onehop_model, tokenizer_model
from toolkit.serving import running_server

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]
NAME = "hop"
TEXTS = ["short", "A much longer sentence about tea, rain and the committee's decision, postponed until March.", "x " * 200]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("onehop")
    serving = ServingOptions(one_hop=True, tokenizer_instances=2, intra_op_threads=1)
    request = BuildRequest(model="minilm", name=NAME, layers=1, precisions=(Precision.FP32, Precision.HYBRID), max_batch=8,
                           min_seq=1, opt_seq=32, max_seq=64, runtimes=("onnxruntime",), serving=serving)  # fmt: skip
    build_model(request, repo, tmp_path_factory.mktemp("work"), log=lambda _: None)
    return repo


@pytest.fixture(scope="module")
def client(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonTextClient]:
    with running_server(repository, state_dir=tmp_path_factory.mktemp("server"), timeout=300) as handle:
        yield TritonTextClient(f"127.0.0.1:{handle.ports.grpc}", retries=2)


def test_one_hop_models_sit_beside_the_ensembles_with_the_tokenizers_instances(repository: Path) -> None:
    configs = read_configs(repository)
    for precision in ("fp32", "hybrid"):
        assert ensemble_model(NAME, precision) in configs and onehop_model(NAME, precision) in configs
        hop = configs[onehop_model(NAME, precision)]
        assert [o.name for o in hop.output] == [SENTENCE_EMBEDDING, TRUNCATED] and hop.parameters["pad_id"].string_value == "0"
    assert configs[tokenizer_model(NAME)].instance_group[0].count == 2
    files = {p.name for p in (repository / onehop_model(NAME, "fp32") / "1").iterdir()}
    assert files == {"model.py", "text_encoder.py", "ort_device.py", "step_timing.py", "model.onnx", "tokenizer"}


@pytest.mark.parametrize("precision", ["fp32", "hybrid"])
def test_one_hop_answers_what_the_ensemble_answers_for_rows_of_mixed_lengths(client: TritonTextClient, precision: str) -> None:
    ensemble = client.infer_text(ensemble_model(NAME, precision), TEXTS)
    hop = client.infer_text(onehop_model(NAME, precision), TEXTS)
    assert cosine_rows(ensemble[SENTENCE_EMBEDDING], hop[SENTENCE_EMBEDDING]).min() >= 0.999999
    assert hop[TRUNCATED].reshape(-1).tolist() == ensemble[TRUNCATED].reshape(-1).tolist() == [False, False, True]


def test_one_hop_batches_concurrent_requests_and_a_bad_one_fails_alone(client: TritonTextClient) -> None:
    model = onehop_model(NAME, "fp32")
    reference = client.infer_text(model, TEXTS[:2])[SENTENCE_EMBEDDING]
    before = client._client().get_inference_statistics(model, as_json=True)["model_stats"][0]
    with ThreadPoolExecutor(16) as pool:
        outputs = list(pool.map(lambda i: client.infer_text(model, [TEXTS[i % 2]])[SENTENCE_EMBEDDING], range(96)))
    after = client._client().get_inference_statistics(model, as_json=True)["model_stats"][0]
    assert all(cosine_rows(reference[i % 2 : i % 2 + 1], out).min() >= 0.999999 for i, out in enumerate(outputs))
    requests = int(after["inference_stats"]["success"]["count"]) - int(before["inference_stats"]["success"]["count"])
    executions = int(after["execution_count"]) - int(before["execution_count"])
    assert requests == 96 and executions < requests  # the dynamic batcher grouped requests into fewer executions
    with pytest.raises(ServerError, match="row 0 is empty"):
        client.infer(model, {"TEXT": np.array([[b"   "]], dtype=np.object_)})
    assert client.infer_text(model, TEXTS[:1])[SENTENCE_EMBEDDING].shape == (1, 384)


def test_texts_per_request_keeps_good_requests_and_names_the_bad_row_of_each_refused_one() -> None:
    """What both text backends do first: one request with a bad row fails alone, with the row named."""
    from toolkit.backends.common.text_encoder import texts_per_request

    good, bad_utf8, blank = np.array([b"a cup of tea", b"two"], dtype=object), np.array([b"ok", b"caf\xe9"], dtype=object), np.array([b"  "], dtype=object)
    accepted, refused = texts_per_request([good, bad_utf8, blank])
    assert accepted == [(0, ["a cup of tea", "two"])]
    assert refused[1].startswith("TEXT row 1 is not valid UTF-8") and refused[2].startswith("TEXT row 0 is empty or blank") and len(refused) == 2


@pytest.mark.parametrize("single_template", ["[CLS]:0 $A:0 [SEP]:0", "[CLS]:1 $A:1 [SEP]:0"])
def test_token_tensors_hold_each_encodings_ids_mask_and_type_ids_padded_to_one_width(tmp_path: Path, single_template: str) -> None:
    """The vectorized packing against the encodings themselves, row by row: rows of mixed lengths, truncated ones, and
    a template whose type ids are not all 0 (read per row then)."""
    from tokenizers import Tokenizer, processors

    from toolkit.backends.common.text_encoder import TextEncoder
    from toolkit.models.tokenizers import minilm_folder

    tokenizer = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    special = [("[CLS]", tokenizer.token_to_id("[CLS]")), ("[SEP]", tokenizer.token_to_id("[SEP]"))]
    tokenizer.post_processor = processors.TemplateProcessing(single=single_template, pair="$A $B", special_tokens=special)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    encoder = TextEncoder(str(tmp_path / "tokenizer.json"), max_seq_len=24, min_seq_len=4, buckets=(8, 16, 24), pad_id=7)
    encodings = encoder.encodings(TEXTS)
    tensors = encoder.tensors(encodings)
    assert tensors["input_ids"].shape == (3, 24) and encoder.type_ids_vary == (":1" in single_template)
    for row, encoding in enumerate(encodings):
        length = len(encoding.ids)
        assert tensors["input_ids"][row].tolist() == encoding.ids + [7] * (24 - length)
        assert tensors["attention_mask"][row].tolist() == [1] * length + [0] * (24 - length)
        assert tensors["token_type_ids"][row].tolist() == encoding.type_ids + [0] * (24 - length)
    assert tensors["truncated"].reshape(-1).tolist() == [False, False, True]
    assert encoder.tensors(encodings[:1])["input_ids"].shape == (1, 8)  # "short": 3 tokens, min 4, bucket 8


def test_tokenizer_threads_size_the_stubs_encoding_pool(tmp_path: Path) -> None:
    """``tokenizer_threads`` reaches the thread pool tokenizers encodes on (rayon's, sized at its first use): a process
    that read 3 runs one thread more, after encoding, than one that read 2; one that read 1 encodes on its own thread
    and starts no pool (two threads fewer than 2)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    from toolkit.models.tokenizers import minilm_folder

    version = tmp_path / "1"
    (version / "tokenizer").mkdir(parents=True)
    shutil.copy(minilm_folder() / "tokenizer.json", version / "tokenizer" / "tokenizer.json")
    environment = {k: v for k, v in os.environ.items() if k != "RAYON_NUM_THREADS"} | {"TOKENIZERS_PARALLELISM": "true"}

    def threads_after_encoding(threads: int) -> int:
        config = {"parameters": {"max_seq_len": {"string_value": "32"}, "tokenizer_threads": {"string_value": str(threads)}}}
        args = {"model_config": json.dumps(config), "model_repository": str(tmp_path), "model_version": "1"}
        script = (
            "import json, os; from toolkit.backends.common.text_encoder import ModelSetup; "
            f"setup = ModelSetup.from_args(json.loads({json.dumps(json.dumps(args))})); "
            "setup.encoder.encodings(['a cup of tea in the rain'] * 256); print(len(os.listdir('/proc/self/task')))"
        )
        return int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=environment).stdout)

    one, two, three = (threads_after_encoding(n) for n in (1, 2, 3))
    assert (three - two, two - one) == (1, 2)
