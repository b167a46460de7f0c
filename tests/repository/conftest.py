"""moto's S3 server for the push tests (``tests/moto_s3.py``)."""

from moto_s3 import s3

__all__ = ["s3"]
