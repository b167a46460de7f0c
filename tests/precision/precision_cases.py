"""Shared helpers of the precision tests: a model exported with its text and random-id data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from toolkit.models.export import onnx_from_hf
from toolkit.models.loading import LoadedModel
from toolkit.precision.data import DataSet, random_dataset, text_dataset

SHAPE = {"batch_size": 4, "seq_len": 32, "batches": 2}


@dataclass(frozen=True)
class Case:
    """A model under test: loaded, exported, and its text and random-id data."""

    model: LoadedModel
    graph: onnx.ModelProto
    text: DataSet
    random: DataSet


def make_case(model: LoadedModel, folder: Path) -> Case:
    """Export ``model`` into ``folder``; text and random ids of the tests' shape."""
    path = onnx_from_hf(model, folder / f"{model.name}.onnx")
    text = text_dataset(model.tokenizer, **SHAPE)
    random = random_dataset(model.vocab_size, **SHAPE)
    return Case(model, onnx.load(str(path)), text, random)
