"""ModernBERT (``modernbert``): answerdotai/ModernBERT-base and the embedding models built on it.

Rotary positions, alternating global and sliding-window attention, GeGLU, no token type ids and no pooler.
It builds its own global and sliding-window masks from the 2-D attention mask, so it is given that mask
rather than the 4-D additive one the other encoders get. Its export verifies against PyTorch at shapes other
than the traced one (sequence lengths below and above the sliding window) with eager attention. ONNX
Runtime's BERT fusions find its LayerNorms and GELUs; its rotary attention runs unfused on the GPU (the
rotary fusion is turned off: see ``ort_fusions_off``).

Positions and both masks are computed here from the input tensors, not from their shapes: left to
transformers, they come from ``torch.arange(seq_len)``, which exports as Range over the input's Shape, and ONNX
Runtime's CUDA provider places such shape arithmetic on the CPU. A graph with any node on the CPU cannot be
captured as a CUDA graph: on the H200 the earlier export ran without one ("all compute graph nodes have not been
partitioned to the CUDAExecutionProvider"), b1 s128 in 7.45 ms against torch.compile's 1.08. That the export
below restores the graph is expected, not yet measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.models.families.base import EncoderFamily
from toolkit.models.tokenizers import byte_level_bpe

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerFast

MODERNBERT_SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")


class ModernBert(EncoderFamily):
    name: ClassVar[str] = "modernbert"
    model_types: ClassVar[tuple[str, ...]] = ("modernbert",)
    shipped_configs: ClassVar[tuple[str, ...]] = ("answerdotai/ModernBERT-base",)
    tokenizer_kind: ClassVar[str] = "byte-level BPE trained on data/corpus.txt"
    ort_model_type: ClassVar[str | None] = "bert"
    # ONNX Runtime 1.31's RotaryEmbedding fusion reads the export's [1, seq] position ids as [batch, seq] and fails
    # at batch > 1 (seen on the H200); the unfused rotary runs correctly.
    ort_fusions_off: ClassVar[tuple[str, ...]] = ("enable_rotary_embeddings",)
    attention: ClassVar[str] = "eager"

    def attention_implementation(self) -> str:
        return self.attention  # its rotary attention has no classic form to export

    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        from transformers import PreTrainedTokenizerFast

        tokenizer = byte_level_bpe(corpus, 50368, MODERNBERT_SPECIALS, template=("[CLS]", "[SEP]"))
        names = {"cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
        return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **names)

    def encode(
        self, module: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError("ModernBERT needs the 2-D attention mask: see graph_outputs")

    def graph_outputs(
        self, model: Any, module: torch.nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        from toolkit.models.pooling import pool

        base: Any = module.base_model
        positions, masks = self.positions_and_masks(base.config, input_ids, attention_mask)
        states = base(input_ids=input_ids, attention_mask=masks, position_ids=positions).last_hidden_state
        outputs = [states, pool(states, attention_mask, model.pooling)]
        if model.task == "classification":
            outputs += self._classification(module, states, attention_mask)
        return tuple(outputs)

    @staticmethod
    def positions_and_masks(config: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Position ids 0..seq-1 and the additive global and sliding-window masks transformers would build, derived
        from the input tensors themselves (cumulative sums and comparisons) so that every node stays on the GPU."""
        import torch

        # int32 as RoBERTa's position ids, whose CumSum ran inside the H200's captured CUDA graphs.
        positions = torch.cumsum(torch.ones_like(input_ids, dtype=torch.int32), dim=1) - 1  # [batch, seq]
        keys = attention_mask.to(torch.bool)[:, None, None, :]  # [batch, 1, 1, seq]: padding keys masked
        window = getattr(config, "sliding_window", None) or config.local_attention // 2
        near = (positions[:, :, None] - positions[:, None, :]).abs() <= window  # |query - key| <= half the window
        low = torch.finfo(torch.float32).min
        zero = torch.zeros((), dtype=torch.float32)
        return positions, {
            "full_attention": torch.where(keys, zero, low),
            "sliding_attention": torch.where(keys & near[:, None], zero, low),
        }

    def _classification(self, module: torch.nn.Module, states: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        import torch

        head: Any = module  # ModernBertForSequenceClassification: pooled by its config's classifier_pooling
        if head.config.classifier_pooling == "cls":
            pooled = states[:, 0]
        else:
            keep = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * keep).sum(dim=1) / keep.sum(dim=1)
        logits = head.classifier(head.drop(head.head(pooled)))
        return [logits, torch.softmax(logits, dim=-1), logits.argmax(dim=-1, keepdim=True)]


FAMILY = ModernBert()
