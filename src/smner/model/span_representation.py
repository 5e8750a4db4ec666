"""Span representation: end points, a width embedding and a summed word-shape embedding.

Interface in the AllenNLP manner: word vectors ``[B, T, H]`` and spans ``[S, 2]`` in, span
vectors ``[B, S, D]`` out. The shape sum over a span is a difference of prefix sums, so every
span costs the same whatever its width.
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
        batch = words.size(0)
        starts, ends = spans[:, 0], spans[:, 1]
        first = words[:, starts]  # [B, S, H]
        last = words[:, ends - 1]
        width = self.width(ends - starts).unsqueeze(0).expand(batch, -1, -1)
        prefix = F.pad(self.shape(shape_ids).cumsum(dim=1), (0, 0, 1, 0))  # [B, T + 1, E]
        shape = prefix[:, ends] - prefix[:, starts]
        return self.dropout(self.project(torch.cat([first, last, width, shape], dim=-1)))
