"""Triton model repository generation: configs as protobuf messages, folders, validation."""

from toolkit.repository.configs import (
    config_for_engine,
    config_for_ensemble,
    config_for_tokenizer,
    config_text,
)
from toolkit.repository.layout import (
    read_configs,
    validate_repository,
    write_model_repository,
)

__all__ = [
    "config_for_engine",
    "config_for_ensemble",
    "config_for_tokenizer",
    "config_text",
    "read_configs",
    "validate_repository",
    "write_model_repository",
]
