"""A built repository in object storage: repository URLs, and a push that servers polling the bucket can follow.

Triton reads ``s3://`` (and ``gs://``, ``as://``) repositories itself; ``s3://host:port/bucket/path`` names an
S3-compatible server (MinIO, moto) over HTTP, ``s3://https://host:port/bucket/path`` over HTTPS.

``push_repository`` uploads a local repository so that a server polling the bucket never loads half a model.
Per model, in order:

1. the model's files go under ``<model>/<V>/``, V one above every version folder already there; the config in
   the bucket names its versions explicitly (``version_policy { specific { versions: [...] } }``), so Triton
   ignores a folder that is still filling up;
2. files beside the config (the tokenizer model's ``manifest.json``);
3. ``<model>/config.pbtxt`` naming V: one PUT, which S3 applies atomically: the switch;
4. version folders beyond the newest ``keep`` published ones are deleted (a server that read the previous
   config a moment ago still finds its files), and so are leftovers of an interrupted push.

Models go consumers first: an engine before the tokenizer that feeds it, ensembles last, so an ensemble's
config appears only after the models it calls. A model whose files and config equal what its bucket config
records (a digest in the object's metadata) is left alone. What stays: a server that polls while the models
of one push switch one by one may load, for one poll interval, a new engine next to the previous tokenizer
(README, "Serving from object storage").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from toolkit.errors import BadInputError, ToolkitError

RepositoryLocation = Path | str  # a local folder, or a URL Triton reads itself
REMOTE_SCHEMES = ("s3", "gs", "as")
# What each scheme's client in tritonserver reads from its environment (docker passes these names through).
CREDENTIAL_VARIABLES: dict[str, tuple[str, ...]] = {
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_PROFILE"),
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS",),
    "as": ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"),
}
# tritonserver's own pattern for S3 paths that name a host (core/src/filesystem/implementations/s3.h).
TRITON_S3_HOST_URL = re.compile(r"s3://(http://|https://|)([0-9a-zA-Z\-.]+):([0-9]+)/([0-9a-z.\-]+)(((/[0-9a-zA-Z.\-_]+)*)?)")
TRITON_S3_KEY = re.compile(r"[0-9a-zA-Z.\-_/]+")
CONFIG = "config.pbtxt"
DIGEST_METADATA = "toolkit-digest"
PUBLISHED_METADATA = "toolkit-published"  # versions the config named, newest first, over the pushes


class ObjectStoreError(ToolkitError):
    """The object store refused or failed a request (its error code and the bucket are in the message)."""


def remote_scheme(location: RepositoryLocation) -> str | None:
    """``"s3"``, ``"gs"`` or ``"as"`` for a repository URL Triton reads itself; None for a local folder."""
    if isinstance(location, Path):
        return None
    scheme, separator, _ = location.partition("://")
    return scheme if separator and scheme in REMOTE_SCHEMES else None


def repository_location(value: str | Path) -> RepositoryLocation:
    """A command-line repository value: URLs stay strings (``Path`` would fold ``s3://`` into ``s3:/``)."""
    if isinstance(value, Path):
        return value
    if "://" in value and remote_scheme(value) is None:
        raise BadInputError(f"repository {value!r}: Triton reads {', '.join(s + '://' for s in REMOTE_SCHEMES)} URLs or a local folder")
    return value if remote_scheme(value) else Path(value)


@dataclass(frozen=True)
class S3Location:
    """Where a repository lives in S3: bucket, key prefix, and the endpoint of an S3-compatible server if any."""

    bucket: str
    prefix: str = ""
    endpoint: str | None = None  # "http://host:port" from Triton's s3://host:port/bucket/path form

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """Read a URL the way tritonserver does: ``s3://bucket/path`` or ``s3://[http(s)://]host:port/bucket/path``."""
        if remote_scheme(url) != "s3":
            raise BadInputError(f"{url!r} is not an s3:// URL; push writes to S3 or an S3-compatible store (--to s3://bucket/path)")
        body = url.removeprefix("s3://")
        first = body.split("/", 1)[0]
        if first in ("http:", "https:") or re.fullmatch(r"[^/]+:\d+", first):
            match = TRITON_S3_HOST_URL.fullmatch(url.rstrip("/"))
            if match is None:
                raise BadInputError(
                    f"{url!r}: tritonserver reads s3://[http(s)://]host:port/bucket/path only with a bucket of "
                    "[0-9a-z.-] and a path of [0-9a-zA-Z._-/]; rename the bucket or path"
                )
            scheme, host, port, bucket, path = match.group(1) or "http://", match.group(2), match.group(3), match.group(4), match.group(5)
            return cls(bucket, path.strip("/"), f"{scheme}{host}:{port}")
        bucket, _, path = body.partition("/")
        if not bucket:
            raise BadInputError(f"{url!r} names no bucket: use s3://bucket/path")
        return cls(bucket, path.strip("/"))

    def key(self, relative: str) -> str:
        """The object key of ``relative`` (a path under the repository root)."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    @property
    def url(self) -> str:
        """The URL tritonserver reads (``--model-repository``)."""
        host = self.endpoint.replace("http://", "", 1) + "/" if self.endpoint else ""
        return f"s3://{host}{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")


@dataclass(frozen=True)
class StoredObject:
    """An object's bytes and its user metadata."""

    body: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)


class ObjectStore(Protocol):
    """The four requests a push makes; keys are full object keys."""

    def keys(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``."""
        ...

    def read(self, key: str) -> StoredObject | None:
        """The object, or None when there is none."""
        ...

    def write(self, key: str, body: bytes | Path, metadata: Mapping[str, str] | None = None) -> None:
        """Create or replace one object; readers see the old or the new object, never a part."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Remove objects (absent ones are fine)."""
        ...


class S3Store:
    """``ObjectStore`` on S3 or an S3-compatible server through boto3; credentials from the standard AWS chain."""

    def __init__(self, location: S3Location, client: Any | None = None) -> None:
        self.location = location
        if client is None:
            try:
                import boto3
            except ImportError as error:
                from toolkit.errors import DependencyMissingError

                raise DependencyMissingError("pushing to S3 needs boto3: pip install boto3==1.44.8") from error
            client = boto3.client("s3", endpoint_url=location.endpoint)
        self.client = client

    def _call(self, what: str, request: Callable[..., Any], /, **arguments: Any) -> Any:
        """Run one boto3 request; botocore's errors become ObjectStoreError naming the bucket and the fix."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

        where = f"{what} in bucket {self.location.bucket!r}" + (f" at {self.location.endpoint}" if self.location.endpoint else "")
        try:
            return request(**arguments)
        except NoCredentialsError as error:
            raise ObjectStoreError(f"{where}: no AWS credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)") from error
        except NoRegionError as error:
            raise ObjectStoreError(f"{where}: no AWS region; set AWS_DEFAULT_REGION") from error
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "?")
            hint = {
                "NoSuchBucket": "create the bucket first",
                "404": "create the bucket first",
                "403": "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and the bucket policy",
                "AccessDenied": "check the bucket policy for these credentials",
                "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID",
                "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY",
            }.get(code, "see the store's message")
            raise ObjectStoreError(f"{where}: {code} ({error}); {hint}") from error
        except (BotoCoreError, Boto3Error) as error:  # e.g. the endpoint does not answer, an upload failed
            raise ObjectStoreError(f"{where}: {error}") from error

    def check(self) -> None:
        """Fail early, with the fix, when the bucket is missing or the credentials are refused."""
        self._call("head bucket", self.client.head_bucket, Bucket=self.location.bucket)

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        token: dict[str, str] = {}
        while True:
            page = self._call(f"list {prefix!r}", self.client.list_objects_v2, Bucket=self.location.bucket, Prefix=prefix, **token)
            found += [item["Key"] for item in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def read(self, key: str) -> StoredObject | None:
        from botocore.exceptions import ClientError

        def get() -> StoredObject | None:
            try:
                reply = self.client.get_object(Bucket=self.location.bucket, Key=key)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    return None
                raise
            return StoredObject(reply["Body"].read(), dict(reply.get("Metadata", {})))

        result: StoredObject | None = self._call(f"read {key!r}", get)
        return result

    def write(self, key: str, body: bytes | Path, metadata: Mapping[str, str] | None = None) -> None:
        extra = {"Metadata": dict(metadata)} if metadata else {}
        if isinstance(body, Path):  # streamed; multipart for large engines, still one object when complete
            self._call(f"upload {key!r}", self.client.upload_file, Filename=str(body), Bucket=self.location.bucket, Key=key, ExtraArgs=extra or None)
        else:
            self._call(f"write {key!r}", self.client.put_object, Bucket=self.location.bucket, Key=key, Body=body, **extra)

    def delete(self, keys: Sequence[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = {"Objects": [{"Key": key} for key in keys[start : start + 1000]], "Quiet": True}
            self._call("delete old versions", self.client.delete_objects, Bucket=self.location.bucket, Delete=batch)


@dataclass(frozen=True)
class ModelPush:
    """What a push did to one model: the version it published (None: unchanged) and the versions it deleted."""

    model: str
    version: int | None
    kept: tuple[int, ...] = ()
    deleted: tuple[int, ...] = ()


def push_order(configs: Mapping[str, Any]) -> list[str]:
    """Model names in upload order: a model after those it sends tensors to (engine, then tokenizer), ensembles last."""
    depth = dict.fromkeys(configs, 0)
    for config in configs.values():
        for position, step in enumerate(config.ensemble_scheduling.step):
            depth[step.model_name] = max(depth.get(step.model_name, 0), position)
    return sorted(configs, key=lambda name: (configs[name].platform == "ensemble", -depth[name], name))


def _local_files(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """({path under the version folder: file}, {path beside the config: file}) of one local model folder.

    The highest numbered local folder is the version pushed; the config itself is pushed separately.
    """
    versions = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise BadInputError(f"{folder} has no version folder (1/): rebuild the repository (build_engines.py)")
    version = versions[-1]
    inside = {p.relative_to(version).as_posix(): p for p in _files(version)}
    beside = {p.relative_to(folder).as_posix(): p for p in _files(folder) if p.name != CONFIG and not p.relative_to(folder).parts[0].isdigit()}
    return inside, beside


def _files(folder: Path) -> list[Path]:
    """Files under ``folder``, without the ``__pycache__`` a local server's Python stub leaves beside model.py."""
    return [p for p in sorted(folder.rglob("*")) if p.is_file() and "__pycache__" not in p.relative_to(folder).parts]


def _digest(config_text: str, files: Mapping[str, Path]) -> str:
    digest = hashlib.sha256(config_text.encode())
    for relative, path in sorted(files.items()):
        digest.update(f"\0{relative}\0".encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _remote_versions(keys: Sequence[str], model_prefix: str) -> set[int]:
    """Version folders present under ``<model>/`` (complete or not)."""
    versions = set()
    for key in keys:
        first, slash, _ = key[len(model_prefix) :].partition("/")
        if slash and first.isdigit():
            versions.add(int(first))
    return versions


def _published(current: StoredObject | None, present: set[int]) -> list[int]:
    """Versions the bucket's config has named, newest first: our metadata, else the config's own version policy
    (a config written by something else: its specific versions, or the latest present folder)."""
    if current is None:
        return []
    recorded = current.metadata.get(PUBLISHED_METADATA, "")
    if recorded:
        return [int(v) for v in recorded.split(",") if v.isdigit()]
    from google.protobuf import text_format

    from toolkit.repository.configs import config_from_text

    try:
        policy = config_from_text(current.body.decode()).version_policy
    except (text_format.ParseError, UnicodeDecodeError):  # a config we cannot read names nothing we can keep
        return []
    named = policy.specific.versions if policy.HasField("specific") else sorted(present)[-1:]
    return sorted(named, reverse=True)


def push_model(
    store: ObjectStore, location: S3Location, folder: Path, *, keep: int = 2, force: bool = False, log: Callable[[str], None] = print
) -> ModelPush:
    """Publish one local model folder as a new version of ``<prefix>/<model>/`` (module docstring, steps 1-4)."""
    from toolkit.repository.configs import config_from_text, config_text

    name = folder.name
    config = config_from_text((folder / CONFIG).read_text())
    inside, beside = _local_files(folder)
    if location.endpoint:
        odd = [f"{name}/{relative}" for relative in [*inside, *beside] if not TRITON_S3_KEY.fullmatch(relative)]
        if odd or not TRITON_S3_KEY.fullmatch(name):
            raise BadInputError(f"{odd or [name]}: tritonserver reads s3://host:port/... keys of [0-9a-zA-Z._-/] only; rename these files")
    digest = _digest(config_text(config), {**{f"v/{k}": p for k, p in inside.items()}, **beside})
    model_prefix = location.key(f"{name}/")
    current = store.read(model_prefix + CONFIG)
    if current is not None and not force and current.metadata.get(DIGEST_METADATA) == digest:
        log(f"{name}: unchanged")
        return ModelPush(name, None)
    keys = store.keys(model_prefix)
    present = _remote_versions(keys, model_prefix)
    published = _published(current, present)
    version = max(present | set(published) | {0}) + 1
    for relative, path in inside.items():
        store.write(f"{model_prefix}{version}/{relative}", path)
    if not inside:  # S3 has no folders: Triton sees a version only through a key under it (ensembles have no files)
        store.write(f"{model_prefix}{version}/", b"")
    for relative, path in beside.items():
        store.write(model_prefix + relative, path)
    kept = [version, *published][:keep]
    config.version_policy.specific.versions[:] = [version]
    store.write(model_prefix + CONFIG, config_text(config).encode(), {DIGEST_METADATA: digest, PUBLISHED_METADATA: ",".join(map(str, kept))})
    stale = sorted(present - set(kept))
    if stale:
        store.delete([key for key in keys if key[len(model_prefix) :].partition("/")[0] in {str(v) for v in stale}])
    log(f"{name}: version {version}" + (f", deleted {stale}" if stale else ""))
    return ModelPush(name, version, tuple(kept), tuple(stale))


def push_repository(
    repository: Path,
    url: str,
    *,
    keep: int = 2,
    force: bool = False,
    store: ObjectStore | None = None,
    log: Callable[[str], None] = print,
) -> list[ModelPush]:
    """Upload every model of the local ``repository`` to ``url`` (``s3://...``) in ``push_order``.

    ``keep`` published versions stay per model (the new one included, at least 1); ``force`` publishes
    unchanged models again. ``store`` replaces the boto3 client (tests).
    """
    from toolkit.repository.layout import validate_repository

    if keep < 1:
        raise BadInputError(f"keep={keep}: at least the version just published stays (--keep 1 or more)")
    location = S3Location.parse(url)
    configs = validate_repository(repository)
    if store is None:
        s3 = S3Store(location)
        s3.check()
        store = s3
    return [push_model(store, location, repository / name, keep=keep, force=force, log=log) for name in push_order(configs)]
