"""What a model family provides: one module per family under ``toolkit/models/families/``, one object
implementing :class:`ModelFamily`, registered in ``families/__init__.py``. Nothing outside that folder
branches on a family.

A family says which ``model_type`` values it covers and which hub ids ship a config (offline random-weight
builds), which transformers class loads a checkpoint (base, classification head or causal LM), the engine's
inputs (token type ids or not), how positions limit the sequence (RoBERTa's padding-index offset), how to make
an offline tokenizer of its kind, what the exported graph computes and outputs (:meth:`ModelFamily.graph_outputs`
is also what the PyTorch baseline runs: the export wrapper calls it), ONNX Runtime's optimizer ``model_type``
and the family's own graph passes for the fused GPU graph, and which embedding tables a stress test plants
an outlier in. Encoders share :class:`EncoderFamily`, decoders :class:`CausalLMFamily`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.artifacts import TensorSpec
from toolkit.names import (
    ATTENTION_MASK,
    INPUT_IDS,
    LABEL,
    LABEL_ID,
    LAST_HIDDEN_STATE,
    LOGITS,
    NEXT_TOKEN_ID,
    NEXT_TOKEN_LOGITS,
    POOLER_OUTPUT,
    PROBABILITIES,
    SENTENCE_EMBEDDING,
    TOKEN_TYPE_IDS,
)

if TYPE_CHECKING:
    import onnx
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerFast

    from toolkit.models.loading import LoadedModel

EMBEDDING, CLASSIFICATION, CAUSAL_LM = "embedding", "classification", "causal-lm"


class ModelFamily(ABC):
    """One family of transformers architectures: how to load, export, tokenize offline, fuse and stress it."""

    name: ClassVar[str]  # e.g. "bert"
    model_types: ClassVar[tuple[str, ...]]  # transformers ``config.model_type`` values this family covers
    shipped_configs: ClassVar[tuple[str, ...]] = ()  # hub ids whose config ships in toolkit/models/configs/
    tokenizer_kind: ClassVar[str]  # what ``offline_tokenizer`` makes, for messages and the manifest
    uses_token_type_ids: ClassVar[bool] = False
    causal: ClassVar[bool] = False
    layers_key: ClassVar[str] = "num_hidden_layers"  # the config field --layers sets
    ort_model_type: ClassVar[str | None] = None  # ONNX Runtime optimizer model_type; None: no fusion known
    ort_fusions_off: ClassVar[tuple[str, ...]] = ()  # FusionOptions flags (enable_...) this family turns off
    attention: ClassVar[str] = "eager"  # transformers attention implementation used for export
    hybrid_keep_fp32: ClassVar[tuple[str, ...]] = ()  # op types this family adds to the hybrid policy's FP32 list

    def engine_inputs(self) -> tuple[str, ...]:
        """The engine's (and tokenizer model's) token tensors, in graph order."""
        return (INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS) if self.uses_token_type_ids else (INPUT_IDS, ATTENTION_MASK)

    def max_positions(self, config: PretrainedConfig) -> int:
        """The longest sequence the position embeddings allow."""
        return int(config.max_position_embeddings)

    def num_heads(self, config: PretrainedConfig) -> int:
        return int(config.num_attention_heads)

    def hidden_size(self, config: PretrainedConfig) -> int:
        return int(config.hidden_size)

    def task(self, config: PretrainedConfig) -> str:
        """``classification`` when the checkpoint names a sequence-classification head, else ``embedding``."""
        heads = [arch for arch in (config.architectures or []) if arch.endswith("ForSequenceClassification")]
        return CLASSIFICATION if heads else EMBEDDING

    def model_class(self, task: str) -> Any:
        """The transformers class that loads this family for ``task``."""
        import transformers

        return transformers.AutoModelForSequenceClassification if task == CLASSIFICATION else transformers.AutoModel

    def attention_implementation(self) -> str:
        """The attention implementation to export with (registering a custom one where the family needs it)."""
        return self.attention

    @abstractmethod
    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        """A tokenizer of this family's kind for random-weight builds, made reproducibly from ``corpus``."""

    @abstractmethod
    def output_specs(self, model: LoadedModel) -> tuple[TensorSpec, ...]:
        """The graph's outputs in order; the first is the per-token output fidelity is measured on."""

    @abstractmethod
    def ensemble_outputs(self, model: LoadedModel) -> tuple[str, ...]:
        """What the text ensemble returns (besides ``truncated``)."""

    @abstractmethod
    def graph_outputs(
        self, model: LoadedModel, module: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """The graph's outputs (``output_specs`` order) from ``module`` given the 4-D additive ``mask`` (causal where
        the family is) and the 2-D ``attention_mask``."""

    def post_fusion(self, graph: onnx.ModelProto, config: PretrainedConfig) -> dict[str, int]:
        """Passes of this family's own after ONNX Runtime's optimizer, in place; counts of what they did."""
        return {}

    def outlier_tables(self, module: torch.nn.Module) -> list[torch.nn.Embedding]:
        """Embedding tables whose sum enters the residual stream (a stress test plants an outlier channel there)."""
        embeddings = module.base_model.embeddings  # type: ignore[union-attr]
        names = ("word_embeddings", "position_embeddings", "token_type_embeddings")
        return [table for table in (getattr(embeddings, n, None) for n in names) if table is not None]

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the family."""
        return {"name": self.name, "tokenizer": self.tokenizer_kind, "onnxruntime_model_type": self.ort_model_type}


class EncoderFamily(ModelFamily):
    """Encoders: token states, a pooled ``sentence_embedding`` and, with a classification head, logits,
    probabilities and the label."""

    attention = "onnx_classic"  # softmax(QK^T / sqrt(d) + mask) V: the form ONNX Runtime's attention fusion finds

    def attention_implementation(self) -> str:
        from toolkit.models.attention import register_classic_attention

        return register_classic_attention()

    def has_pooler(self, module: torch.nn.Module) -> bool:
        return getattr(module.base_model, "pooler", None) is not None

    def encode(
        self, module: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token states and the pooler's output (None without a pooler) of the base model."""
        kwargs = {"token_type_ids": token_type_ids} if self.uses_token_type_ids and token_type_ids is not None else {}
        base: Any = module.base_model
        out = base(input_ids=input_ids, attention_mask=mask, **kwargs)
        return out.last_hidden_state, getattr(out, "pooler_output", None)

    def classify(self, module: torch.nn.Module, states: torch.Tensor, pooled: torch.Tensor | None) -> torch.Tensor:
        """Logits of the classification head (RoBERTa's form: the head reads the token states)."""
        head: Any = module
        return head.classifier(states)

    def output_specs(self, model: LoadedModel) -> tuple[TensorSpec, ...]:
        hidden = model.hidden_size
        specs = [TensorSpec(LAST_HIDDEN_STATE, (-1, hidden))]
        if self.has_pooler(model.module):
            specs.append(TensorSpec(POOLER_OUTPUT, (hidden,)))
        specs.append(TensorSpec(SENTENCE_EMBEDDING, (hidden * len(model.pooling.modes),)))
        if model.task == CLASSIFICATION:
            labels = int(model.config.num_labels or 2)
            specs += [TensorSpec(LOGITS, (labels,)), TensorSpec(PROBABILITIES, (labels,)), TensorSpec(LABEL_ID, (1,), "TYPE_INT64")]
        return tuple(specs)

    def ensemble_outputs(self, model: LoadedModel) -> tuple[str, ...]:
        return (SENTENCE_EMBEDDING, LOGITS, PROBABILITIES, LABEL) if model.task == CLASSIFICATION else (SENTENCE_EMBEDDING,)

    def graph_outputs(
        self, model: LoadedModel, module: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        import torch

        from toolkit.models.pooling import pool

        states, pooled = self.encode(module, input_ids, mask, token_type_ids)
        outputs = [states, *([pooled] if pooled is not None else []), pool(states, attention_mask, model.pooling)]
        if model.task == CLASSIFICATION:
            logits = self.classify(module, states, pooled)
            multi_label = getattr(model.config, "problem_type", None) == "multi_label_classification"
            probabilities = torch.sigmoid(logits) if multi_label else torch.softmax(logits, dim=-1)
            outputs += [logits, probabilities, logits.argmax(dim=-1, keepdim=True)]
        return tuple(outputs)


class CausalLMFamily(ModelFamily):
    """Decoders: full logits, and each row's next-token logits and id at its last attended position."""

    causal = True

    def task(self, config: PretrainedConfig) -> str:
        return CAUSAL_LM

    def model_class(self, task: str) -> Any:
        import transformers

        return transformers.AutoModelForCausalLM

    def output_specs(self, model: LoadedModel) -> tuple[TensorSpec, ...]:
        vocab = model.vocab_size
        return (TensorSpec(LOGITS, (-1, vocab)), TensorSpec(NEXT_TOKEN_LOGITS, (vocab,)), TensorSpec(NEXT_TOKEN_ID, (1,), "TYPE_INT64"))

    def ensemble_outputs(self, model: LoadedModel) -> tuple[str, ...]:
        return (NEXT_TOKEN_LOGITS, NEXT_TOKEN_ID)

    def graph_outputs(
        self, model: LoadedModel, module: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        import torch

        logits = module(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
        # One-hot of each row's last attended position (cumulative count == total), then one batched MatMul.
        counts = attention_mask.cumsum(dim=1)
        last = ((counts == counts[:, -1:]) & (attention_mask > 0)).to(logits.dtype)
        next_logits = torch.matmul(last.unsqueeze(1), logits).squeeze(1)
        return logits, next_logits, next_logits.argmax(dim=-1, keepdim=True)
