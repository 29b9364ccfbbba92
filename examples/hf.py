"""Hugging Face models from tiny configs (random weights), used exactly as the library returns them: a
``ModelOutput``, with no wrapper. The tests build them end to end; transformers is imported only when a factory
is called, so the rest of the examples never need it."""
from __future__ import annotations

from typing import Any


def bert(hidden: int = 32, layers: int = 2, heads: int = 2, vocab: int = 128, seed: int = 0,
         intermediate: int | None = None, positions: int = 128) -> Any:
    """An encoder: ``BertModel`` returns last_hidden_state and pooler_output (BERT-base: hidden 768, 12 layers,
    12 heads, vocab 30522, intermediate 3072); ``positions``: the longest sequence it takes."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                        intermediate_size=intermediate or 2 * hidden, vocab_size=vocab, max_position_embeddings=positions)
    return BertModel(config).eval()


def gpt2(hidden: int = 32, layers: int = 2, heads: int = 2, vocab: int = 128, seed: int = 0, positions: int = 128) -> Any:
    """A decoder: ``GPT2LMHeadModel`` returns logits (no cache: ``use_cache=False``)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, vocab_size=vocab, n_positions=positions,
                        use_cache=False)
    return GPT2LMHeadModel(config).eval()
