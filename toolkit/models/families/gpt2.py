"""GPT-2 (``gpt2``): gpt2 (124M), distilgpt2 (6 layers) and larger GPT-2 checkpoints.

ONNX Runtime's GPT-2 fusions were written for older transformers exports and fuse no attention in
transformers 5's, so this family fuses its causal attention itself (``toolkit.graphs.causal_attention``) and
pads the vocabulary projection to aligned widths for the GPU's GEMM kernels (``toolkit.graphs.vocab_padding``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from toolkit.models.families.base import CausalLMFamily
from toolkit.models.tokenizers import byte_level_bpe, gpt2_style

if TYPE_CHECKING:
    import onnx
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerFast


class Gpt2(CausalLMFamily):
    name: ClassVar[str] = "gpt2"
    model_types: ClassVar[tuple[str, ...]] = ("gpt2",)
    shipped_configs: ClassVar[tuple[str, ...]] = ("gpt2", "distilgpt2")
    tokenizer_kind: ClassVar[str] = "byte-level BPE trained on data/corpus.txt"
    layers_key: ClassVar[str] = "n_layer"
    ort_model_type: ClassVar[str | None] = "gpt2"

    def max_positions(self, config: PretrainedConfig) -> int:
        return int(config.n_positions)

    def num_heads(self, config: PretrainedConfig) -> int:
        return int(config.n_head)

    def hidden_size(self, config: PretrainedConfig) -> int:
        return int(config.n_embd)

    def offline_tokenizer(self, corpus: Path) -> PreTrainedTokenizerFast:
        return gpt2_style(byte_level_bpe(corpus, 50257, ("<|endoftext|>",)))

    def post_fusion(self, graph: onnx.ModelProto, config: PretrainedConfig) -> dict[str, int]:
        from toolkit.graphs.causal_attention import fuse_causal_attention, key_lengths_mask
        from toolkit.graphs.vocab_padding import pad_vocab_projection

        stats: dict[str, int] = {}
        causal = fuse_causal_attention(graph, self.num_heads(config), self.hidden_size(config))
        if causal:
            stats.update(Attention=causal, AttentionKeyLengths=key_lengths_mask(graph))
        padded = pad_vocab_projection(graph)
        stats.update({"PaddedVocabProjection": padded} if padded else {})
        return stats

    def outlier_tables(self, module: torch.nn.Module) -> list[torch.nn.Embedding]:
        transformer: Any = module.base_model
        return [transformer.wte, transformer.wpe]


FAMILY = Gpt2()
