"""Zoo cases: Embedding, MultiHeadAttention (self, causal, cross, dropout), a tied embedding/head."""

import torch

import fnn
from fnn import layers as L

from . import Case


class SelfAttention(torch.nn.MultiheadAttention):
    """torch.nn.MultiheadAttention called as self-attention, `need_weights=False`: the same
    state_dict names as the fnn layer, one input, one output."""

    def __init__(self, embed: int, heads: int, causal: bool = False, **kwargs):
        super().__init__(embed, heads, batch_first=True, **kwargs)
        self.causal = causal

    def forward(self, x, *rest, **kwargs):
        query, key, value = (x, *rest) if rest else (x if isinstance(x, tuple) else (x, x, x))
        mask = None
        if self.causal:
            mask = torch.ones(query.shape[-2], key.shape[-2], dtype=torch.bool).triu(1)
        return super().forward(query, key, value, attn_mask=mask, need_weights=False)[0]


CASES = [
    Case(
        "Embedding",
        lambda: L.Embedding(11, 4),
        (-1, 5),
        inputs="index:11",
        torch_twin=lambda: torch.nn.Embedding(11, 4),
        notes="integer input: summary feeds floats (give it an Embedding-free body instead)",
    ),
    Case(
        "Embedding-padding",
        lambda: L.Embedding(11, 4, padding_idx=0),
        (-1, 5),
        inputs="index:11",
        torch_twin=lambda: torch.nn.Embedding(11, 4, padding_idx=0),
        notes="finite differences see the padding row's gradient, which torch defines as 0",
    ),
    Case(
        "MultiHeadAttention",
        lambda: L.MultiHeadAttention(2),
        (-1, 5, 8),
        torch_twin=lambda: SelfAttention(8, 2),
    ),
    Case(
        "MultiHeadAttention-causal-nobias",
        lambda: L.MultiHeadAttention(2, causal=True, bias=False),
        (-1, 5, 8),
        torch_twin=lambda: SelfAttention(8, 2, causal=True, bias=False),
    ),
    Case(
        "MultiHeadAttention-cross",
        lambda: L.MultiHeadAttention(2),
        [(-1, 3, 8), (-1, 5, 8), (-1, 5, 8)],
        torch_twin=lambda: SelfAttention(8, 2),
    ),
    Case(
        "MultiHeadAttention-dropout",
        lambda: L.MultiHeadAttention(2, causal=True, dropout=0.25),
        (-1, 5, 8),
        apply_kwargs=lambda: {"key": fnn.random.key(5)},
    ),
    Case(
        "tie-embedding-head",
        lambda: fnn.tie(
            fnn.serial(L.Embedding(11, 4), L.LayerNorm(), L.Dense(11)), {"2.weight": "0.weight"}
        ),
        (-1, 5),
        inputs="index:11",
        notes="params hold the tied weight once (torch's state_dict holds it twice)",
    ),
]
