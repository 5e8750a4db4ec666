"""Heatmaps that read the type evidence: where a predicted entity is drawn in its image.

The span-to-region attention says which cue a name looks at; the region classifier of the
box-free losses (``model.region_types``) says where each type's evidence is. On small cues the
attention's peak often lands beside its cue, and the classifier's averaged map puts it back.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from smner.model.base import ModelOutput
from smner.model.visual_tokens import FIRST_REGION


def neighbourhood_mean(maps: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """``maps [..., M * K]`` over the ``grid`` (rows, columns) of each of M images, each cell
    replaced by the mean of its ``size`` x ``size`` neighbourhood in its own image. Outside
    the picture counts as no evidence: averaged over the cells inside only, a cue near the
    border would peak on the border cell, whose neighbourhood is all cue."""
    rows, cols = grid
    pooled = F.avg_pool2d(maps.reshape(-1, 1, rows, cols), size, stride=1, padding=size // 2)
    return pooled.reshape(maps.shape)


#: the neighbourhood the evidence heatmaps average the region classifier's map over
_HEATMAP_POOLING = 3


def evidence_heatmaps(
    region_attention: torch.Tensor,
    region_logits: torch.Tensor,
    span_logits: torch.Tensor,
    grid: tuple[int, int],
    power: float,
) -> torch.Tensor:
    """Each span's heatmap over the regions ``[B, S, M * K]``: its attention raised to
    ``power``, times the region classifier's evidence for the span's predicted type
    (``region_logits [B, M * K, T]``, averaged over 3 x 3 neighbourhoods; ``span_logits
    [B, S, T + 1]``, label 0 the non-entity), each image keeping the share of the attention
    it had (so the image a span attends to most is the same).

    Why: the attention says which cue a name looks at (two names, two cues), but a small
    cue's edge cells attract it as much as the cells the cue fills, and the peak often lands
    beside the cue. The classifier's averaged map peaks in a cue's middle. At a small power
    the attention keeps the choice of cue and the evidence places the peak on it."""
    types = span_logits.float().softmax(-1)[..., 1:]
    types = types / types.sum(-1, keepdim=True).clamp_min(1e-6)  # [B, S, T]
    shows = region_logits.float().sigmoid().transpose(1, 2)  # [B, T, M * K]
    evidence = types @ neighbourhood_mean(shows, grid, _HEATMAP_POOLING)  # [B, S, M * K]
    attention = region_attention.float()
    weighted = attention.clamp_min(1e-12).pow(power) * evidence * (attention > 0)
    cells = grid[0] * grid[1]
    per_image = weighted.unflatten(-1, (-1, cells))
    share = attention.unflatten(-1, (-1, cells)).sum(-1, keepdim=True)
    per_image = per_image / per_image.sum(-1, keepdim=True).clamp_min(1e-12) * share
    return per_image.flatten(-2).to(region_attention.dtype)


def with_evidence_heatmaps(
    output: ModelOutput, region_logits: torch.Tensor, power: float
) -> ModelOutput:
    """``output`` with each span's attention over the regions replaced by its evidence heatmap
    (:func:`evidence_heatmaps`); as it is where it has no grid, or where the competitive pass,
    and so these heatmaps, still have to run after an exported graph."""
    attention = output.attention
    if attention is None or output.grid is None or output.competition is not None:
        return output
    regions = evidence_heatmaps(
        attention[..., FIRST_REGION:], region_logits, output.logits, output.grid, power
    )
    return replace(output, attention=torch.cat([attention[..., :FIRST_REGION], regions], dim=-1))
