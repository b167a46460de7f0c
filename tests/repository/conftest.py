"""moto's S3 server for the push tests."""

from moto_s3 import s3  # noqa: F401 (a fixture, defined once in tests/moto_s3.py)
