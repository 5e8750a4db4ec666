"""Span representation: end points, a width embedding and a summed word-shape embedding.

Interface in the AllenNLP manner: word vectors ``[B, T, H]`` and spans ``[S, 2]`` in, span
vectors ``[B, S, D]`` out. The projection of ``[h_i ; h_j ; width ; shape]`` is linear, so it
is applied per token (and per width) before gathering: the same function as projecting each
concatenated span vector, at a fraction of the cost, since a post has about six times more
spans than tokens. The shape sum over a span is a difference of prefix sums.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpanRepresentation(nn.Module):
    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        max_width: int,
        width_dim: int,
        shape_dim: int,
        num_shapes: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.width = nn.Embedding(max_width + 1, width_dim)
        self.shape = nn.Embedding(num_shapes, shape_dim, padding_idx=0)
        self.project = nn.Linear(2 * input_dim + width_dim + shape_dim, output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, words: torch.Tensor, shape_ids: torch.Tensor, spans: torch.Tensor
    ) -> torch.Tensor:
        starts, ends = spans[:, 0], spans[:, 1]
        hidden = words.size(-1)
        w_first, w_last, w_width, w_shape = self.project.weight.split(
            [hidden, hidden, self.width.embedding_dim, self.shape.embedding_dim], dim=1
        )
        first = F.linear(words, w_first, self.project.bias)  # [B, T, D]
        last = F.linear(words, w_last)
        widths = F.linear(self.width.weight, w_width)  # [max_width + 1, D]
        shapes = F.linear(self.shape(shape_ids), w_shape)  # [B, T, D]
        prefix = F.pad(shapes.cumsum(dim=1), (0, 0, 1, 0))  # [B, T + 1, D]
        span = (
            first[:, starts]
            + last[:, ends - 1]
            + widths[ends - starts]
            + prefix[:, ends]
            - prefix[:, starts]
        )
        return self.dropout(span)
