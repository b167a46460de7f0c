"""A local S3-compatible server for tests: moto's standalone server.

Production uses S3 itself, MinIO, or Triton's GCS/Azure clients (README, "Serving from object storage").
moto accepts any credentials until ``require_credentials`` turns its IAM checks on.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class MotoS3:
    """A running moto server: ``host:port`` and clients for it."""

    host_port: str

    @property
    def endpoint(self) -> str:
        return f"http://{self.host_port}"

    def client(self, service: str = "s3", **credentials: str) -> Any:
        """A boto3 client of this server (the test credentials unless others are given)."""
        import boto3

        keys = {"aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]}
        return boto3.client(service, endpoint_url=self.endpoint, region_name=CREDENTIALS["AWS_DEFAULT_REGION"], **{**keys, **credentials})

    def bucket(self, name: str) -> str:
        """Create bucket ``name`` (if new) and return it."""
        with contextlib.suppress(self.client().exceptions.BucketAlreadyOwnedByYou):
            self.client().create_bucket(Bucket=name)
        return name

    def url(self, bucket: str, prefix: str = "") -> str:
        """The repository URL as tritonserver reads it: ``s3://host:port/bucket/prefix``."""
        return f"s3://{self.host_port}/{bucket}" + (f"/{prefix}" if prefix else "")

    @contextlib.contextmanager
    def require_credentials(self) -> Iterator[dict[str, str]]:
        """Turn moto's IAM checks on for the block; yields the environment of a user allowed everything on S3."""
        iam = self.client("iam")
        user = f"reader{len(iam.list_users()['Users'])}"
        iam.create_user(UserName=user)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        self._reset_auth("0")
        try:
            yield {**CREDENTIALS, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        finally:
            self._reset_auth("inf")

    def _reset_auth(self, count: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth", data=count.encode(), method="POST", headers={"Content-Type": "text/plain"}
        )
        with urllib.request.urlopen(request, timeout=10):
            pass


@contextlib.contextmanager
def running_moto() -> Iterator[MotoS3]:
    """moto's server in a process of its own on a free loopback port (its IAM switch is global to a process),
    with the test credentials in this process's environment (boto3 and tritonserver children read them there)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", "from moto.server import main; main()", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            assert process.poll() is None and time.monotonic() < deadline, f"moto's server did not start on port {port}"
            time.sleep(0.2)
        with pytest.MonkeyPatch.context() as patch:
            for name, value in CREDENTIALS.items():
                patch.setenv(name, value)
            patch.delenv("AWS_PROFILE", raising=False)
            patch.delenv("AWS_SESSION_TOKEN", raising=False)
            yield MotoS3(f"127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3() -> Iterator[MotoS3]:
    """One moto server for the session (import this fixture into a conftest)."""
    with running_moto() as server:
        yield server
