"""Pushing a repository to S3: what a server polling the bucket can see at every moment of a push (in a store with
S3's semantics), and the same push on moto's S3 server."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from moto_s3 import MotoS3

from toolkit.artifacts import EngineArtifact, ServedModel, TensorSpec
from toolkit.errors import BadInputError
from toolkit.names import Precision
from toolkit.repository.cli import main as cli
from toolkit.repository.configs import config_from_text
from toolkit.repository.layout import read_configs, write_model_repository
from toolkit.repository.naming import engine_model, ensemble_model, tokenizer_model
from toolkit.repository.object_store import (
    ObjectStore,
    ObjectStoreError,
    S3Location,
    S3Store,
    StoredObject,
    push_order,
    push_repository,
)

NAME = "m"
PRECISIONS = (Precision.FP16, Precision.FP32)
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokenizer, two engines and their ensembles (placeholder files: no server reads them), with a manifest."""
    folder = tmp_path_factory.mktemp("push")
    tokenizer_dir = folder / "tokenizer"
    tokenizer_dir.mkdir()
    (tokenizer_dir / "tokenizer.json").write_text("{}")
    (tokenizer_dir / "vocab.txt").write_text("[PAD]\n")
    outputs = (TensorSpec("last_hidden_state", (-1, 8)), TensorSpec("sentence_embedding", (8,)))
    engines = []
    for precision in PRECISIONS:
        path = folder / f"{precision.value}.onnx"
        path.write_bytes(precision.value.encode() * 1000)
        engines.append(EngineArtifact(precision, "onnxruntime", path, outputs))
    model = ServedModel(
        name=NAME, family="bert", tokenizer_dir=tokenizer_dir, engine_inputs=("input_ids", "attention_mask", "token_type_ids"),
        ensemble_outputs=("sentence_embedding",), max_batch_size=4, max_seq_len=32, engines=engines,
    )  # fmt: skip
    root = folder / "repository"
    write_model_repository(root, model)
    (root / tokenizer_model(NAME) / "manifest.json").write_text('{"build": "test"}')
    (root / tokenizer_model(NAME) / "1" / "__pycache__").mkdir()
    (root / tokenizer_model(NAME) / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"local server leftovers")
    return root


class Interrupted(Exception):
    """The push was cut off (a crash, a lost connection)."""


@dataclass
class MemoryStore:
    """An ObjectStore in a dict, with S3's semantics for what a push relies on: a write replaces one object whole."""

    objects: dict[str, StoredObject] = field(default_factory=dict)

    def keys(self, prefix: str) -> list[str]:
        return sorted(key for key in self.objects if key.startswith(prefix))

    def read(self, key: str) -> StoredObject | None:
        return self.objects.get(key)

    def write(self, key: str, body: bytes | Path, metadata: Mapping[str, str] | None = None) -> None:
        self.objects[key] = StoredObject(body.read_bytes() if isinstance(body, Path) else body, dict(metadata or {}))

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)


@dataclass
class StoppingStore:
    """An ObjectStore that fails every write or delete after the first ``allowed``."""

    store: ObjectStore
    allowed: int

    def keys(self, prefix: str) -> list[str]:
        return self.store.keys(prefix)

    def read(self, key: str) -> StoredObject | None:
        return self.store.read(key)

    def _spend(self) -> None:
        if self.allowed == 0:
            raise Interrupted
        self.allowed -= 1

    def write(self, key: str, body: bytes | Path, metadata: Mapping[str, str] | None = None) -> None:
        self._spend()
        self.store.write(key, body, metadata)

    def delete(self, keys: Sequence[str]) -> None:
        self._spend()
        self.store.delete(keys)


def _url(s3: MotoS3) -> str:
    """A fresh repository prefix in the test bucket."""
    return s3.url(s3.bucket("models"), f"run{next(_prefixes)}")


def _keys(url: str) -> list[str]:
    location = S3Location.parse(url)
    return S3Store(location).keys(location.key(""))


def _visible_problems(store: ObjectStore, location: S3Location, repository: Path) -> list[str]:
    """What a server reading the bucket now would trip over: a config naming a version whose files are not all
    there (or more than one), or an ensemble calling a model that has no config."""
    keys = store.keys(location.key(""))
    configs = {}
    for key in keys:
        if key.endswith("/config.pbtxt"):
            found = store.read(key)
            assert found is not None
            configs[key.split("/")[-2]] = config_from_text(found.body.decode())
    problems = []
    for model, config in configs.items():
        versions = list(config.version_policy.specific.versions)
        if len(versions) != 1:
            problems.append(f"{model} names versions {versions}")
        local = repository / model / "1"
        wanted = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file() and "__pycache__" not in p.parts} or {""}
        for version in versions:
            folder = location.key(f"{model}/{version}/")
            present = {key[len(folder) :] for key in keys if key.startswith(folder)}
            if present != wanted:
                problems.append(f"{model} version {version} holds {sorted(present)}, not {sorted(wanted)}")
        problems += [f"ensemble {model} calls {s.model_name}, which has no config" for s in config.ensemble_scheduling.step if s.model_name not in configs]
    return problems


def test_push_order_sends_engines_then_tokenizer_then_ensembles_when_models_form_an_ensemble(repository: Path) -> None:
    order = push_order(read_configs(repository))
    engines = [engine_model(NAME, p) for p in PRECISIONS]
    ensembles = [ensemble_model(NAME, p) for p in PRECISIONS]
    assert order == [*sorted(engines), tokenizer_model(NAME), *sorted(ensembles)]


@pytest.mark.parametrize(
    ("published", "keep"), [(False, 2), (True, 2), (True, 1)], ids=["first-push", "over-published-keep-2", "over-published-keep-1"]
)
def test_push_publishes_only_whole_versions_when_interrupted_after_any_request(repository: Path, published: bool, keep: int) -> None:
    """Every moment of a push, in a store with S3's semantics (the same push on moto's S3: the next tests)."""
    url = "s3://models/r"
    location = S3Location.parse(url)
    for allowed in itertools.count():  # cut the push after 0, 1, 2, ... writes/deletes until one runs to its end
        store = MemoryStore()
        if published:
            push_repository(repository, url, store=store, log=lambda _: None)
            push_repository(repository, url, force=True, store=store, log=lambda _: None)  # two versions: the push deletes one
        try:
            push_repository(repository, url, keep=keep, force=True, store=StoppingStore(store, allowed), log=lambda _: None)
            finished = True
        except Interrupted:
            finished = False
        assert _visible_problems(store, location, repository) == [], f"after {allowed} requests"
        push_repository(repository, url, force=True, store=store, log=lambda _: None)  # the next push completes and cleans up
        assert _visible_problems(store, location, repository) == []
        if finished:
            break
    assert allowed > 10, "the push should take more requests than this"


def test_push_keeps_newest_published_versions_and_drops_leftovers_when_pushed_again(s3: MotoS3, repository: Path) -> None:
    url = _url(s3)
    location = S3Location.parse(url)
    engine = push_order(read_configs(repository))[0]
    push_repository(repository, url, log=lambda _: None)
    push_repository(repository, url, force=True, log=lambda _: None)
    with pytest.raises(Interrupted):  # version 3 of the first model uploaded, its config not switched
        push_repository(repository, url, force=True, store=StoppingStore(S3Store(location), 1), log=lambda _: None)
    pushed = {p.model: p for p in push_repository(repository, url, force=True, log=lambda _: None)}
    assert (pushed[engine].version, pushed[engine].kept) == (4, (4, 2))
    assert _visible_problems(S3Store(location), location, repository) == []
    folders = {key.split("/")[2] for key in _keys(url) if key.split("/")[1] == engine and key.split("/")[2].isdigit()}
    assert folders == {"2", "4"}


def test_push_leaves_models_alone_when_nothing_changed(s3: MotoS3, repository: Path) -> None:
    url = _url(s3)
    push_repository(repository, url, log=lambda _: None)
    before = _keys(url)
    again = push_repository(repository, url, log=lambda _: None)
    assert [p.version for p in again] == [None] * len(again)
    assert _keys(url) == before
    assert not any("__pycache__" in key for key in before)


def test_push_raises_with_fix_when_bucket_is_missing(s3: MotoS3, repository: Path) -> None:
    with pytest.raises(ObjectStoreError, match=r"bucket 'no-such-bucket'.*create the bucket first"):
        push_repository(repository, s3.url("no-such-bucket", "r"), log=lambda _: None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket/a/b/", S3Location("bucket", "a/b")),
        ("s3://bucket", S3Location("bucket")),
        ("s3://127.0.0.1:9000/models/r", S3Location("models", "r", "http://127.0.0.1:9000")),
        ("s3://https://minio.example:443/models", S3Location("models", "", "https://minio.example:443")),
    ],
)
def test_s3_location_reads_url_as_tritonserver_does_when_parsed(url: str, expected: S3Location) -> None:
    assert S3Location.parse(url) == expected
    assert S3Location.parse(expected.url) == expected


@pytest.mark.parametrize("url", ["s3://127.0.0.1:9000/Models_Bucket/r", "s3://", "gs://bucket/r", "/local/folder"])
def test_s3_location_raises_when_url_is_not_one_tritonserver_reads(url: str) -> None:
    with pytest.raises(BadInputError):
        S3Location.parse(url)


def test_cli_push_reports_each_model_when_run_by_hand(s3: MotoS3, repository: Path) -> None:
    url = _url(s3)
    result = CliRunner().invoke(cli, ["push", "--to", url, "--repository", str(repository), "--keep", "1"])
    assert result.exit_code == 0, result.output
    assert f"{engine_model(NAME, Precision.FP32)}: version 1" in result.output
    assert result.output.strip().endswith("5 of 5 models published, 0 unchanged")
