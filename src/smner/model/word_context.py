"""A small contextual layer over word vectors, their shapes and their positions.

The offline text encoders lowercase their input, so nothing they return says which words are
capitalised, and a name's vector hardly says where it stands among the post's other names. A
transformer layer over ``word vector + shape embedding + position embedding`` lets each word
see the case pattern and the order of its neighbours ("the second capitalised name"), which
is what a span needs to ask the image the right question.
"""

from __future__ import annotations

import torch
from torch import nn

#: word positions beyond this share the last position embedding
MAX_POSITIONS = 256


class WordContext(nn.Module):
    def __init__(self, dim: int, num_shapes: int, layers: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.shape = nn.Embedding(num_shapes, dim, padding_idx=0)
        self.position = nn.Embedding(MAX_POSITIONS, dim)
        for embedding in (self.shape, self.position):
            nn.init.normal_(embedding.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(
        self, words: torch.Tensor, shape_ids: torch.Tensor, word_mask: torch.Tensor
    ) -> torch.Tensor:
        """``[B, T, D]`` word vectors -> ``[B, T, D]``: the words (with their shapes and places)
        plus what the layers add from their neighbours (pre-norm residual blocks)."""
        positions = torch.arange(words.size(1), device=words.device).clamp_max(MAX_POSITIONS - 1)
        x = words + self.shape(shape_ids) + self.position(positions)[None]
        return self.encoder(x, src_key_padding_mask=~word_mask)
