"""The grounding head of SMNER: for each span, is it in the image, and where?

The box starts from where the span's attention looked: the mean and spread of its attention
over the region grid (squared, to damp what leaks outside the box) give a centre and a size (a
uniform distribution over ``n`` cells has variance ``(n^2 - 1) / 12`` cells^2, so
``sqrt(12 var + cell^2)`` recovers its extent). A small network then refines that anchor from
the anchors of other powers of the attention and how it is spread (offsets in units of
the anchor's size, log-scale size changes; initialised to zero, so training starts at the
anchor). Tying the box to the attention makes the box and the heatmap a user sees tell the
same story, and lets a coarse grid give boxes finer than its cells. Whether the entity is in
the image at all is a separate probability, read from the span, the attended visual context and
how the attention is spread (a span that finds nothing tends to spread its weight or leave the
grid).

Boxes are ``(x0, y0, x1, y1)`` in ``[0, 1]`` coordinates of the crop the model saw; values past
0 or 1 reach outside the crop (an object cut by the crop goes on beyond it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: log-size changes are clamped to this, so one bad step cannot make a box vanish or explode
_MAX_LOG_SCALE = 3.0
#: attention statistics given to the presence classifier
_STATS = 5


@dataclass
class GroundingOutput:
    in_image_logit: torch.Tensor  # [B, S]
    box: torch.Tensor  # [B, S, 4] (x0, y0, x1, y1) in crop coordinates


def _mlp(inputs: int, hidden: int, outputs: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, outputs)
    )


def attention_anchor(regions: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(cx, cy, w, h)`` in crop coordinates from attention over a row-major region grid
    (``[..., K]``, any non-negative weights; renormalised over the grid)."""
    rows, cols = grid
    weights = regions / regions.sum(-1, keepdim=True).clamp_min(1e-8)
    weights = weights.unflatten(-1, (rows, cols))
    x = (torch.arange(cols, device=regions.device, dtype=regions.dtype) + 0.5) / cols
    y = (torch.arange(rows, device=regions.device, dtype=regions.dtype) + 0.5) / rows
    px, py = weights.sum(-2), weights.sum(-1)  # marginals over columns and rows
    cx, cy = (px * x).sum(-1), (py * y).sum(-1)
    var_x = (px * (x - cx.unsqueeze(-1)) ** 2).sum(-1)
    var_y = (py * (y - cy.unsqueeze(-1)) ** 2).sum(-1)
    w = (12 * var_x + (1 / cols) ** 2).sqrt()
    h = (12 * var_y + (1 / rows) ** 2).sqrt()
    return torch.stack([cx, cy, w, h], dim=-1)


def _attention_stats(attention: torch.Tensor, first_region: int) -> torch.Tensor:
    """Per span: mass on the grid, on the whole-image token, the largest cell's share, the
    normalised entropy over the grid, and the number of cells (log)."""
    regions = attention[..., first_region:]
    mass = regions.sum(-1)
    share = regions / mass.unsqueeze(-1).clamp_min(1e-8)
    cells = regions.size(-1)
    entropy = -(share * share.clamp_min(1e-8).log()).sum(-1) / math.log(max(cells, 2))
    return torch.stack(
        [
            mass,
            attention[..., first_region - 1],
            share.max(-1).values,
            entropy,
            torch.full_like(mass, math.log(cells)),
        ],
        dim=-1,
    )


#: powers of the attention whose anchors the refinement sees; the box starts from the second.
#: Attention that leaks outside the box inflates the plain moments; each power sharpens it
#: (a cell 5x as attended as another weighs 25x, then 625x), so together they tell the
#: refinement how the weight falls off around the box
_ANCHOR_POWERS = (1.0, 2.0, 4.0, 8.0)
_BASE_ANCHOR = 1


class GroundingHead(nn.Module):
    """``(spans, attended context, attention) -> (in-image logit, box)`` for every span."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.presence = _mlp(2 * dim + _STATS, dim, 1, dropout)
        # The refinement sees only the attention's geometry: given the span's vector as well,
        # it learnt the training boxes by heart (IoU > 0.5 for 99% of training entities, 69%
        # of test entities on the generated corpus).
        self.refine = _mlp(4 * len(_ANCHOR_POWERS) + _STATS, dim, 4, dropout)
        nn.init.zeros_(self.refine[-1].weight)
        nn.init.zeros_(self.refine[-1].bias)

    def forward(
        self,
        spans: torch.Tensor,
        attended: torch.Tensor,
        attention: torch.Tensor,
        grid: tuple[int, int],
        first_region: int,
    ) -> GroundingOutput:
        stats = _attention_stats(attention, first_region)
        logit = self.presence(torch.cat([spans, attended, stats], dim=-1)).squeeze(-1)
        regions = attention[..., first_region:]
        peak = regions.amax(-1, keepdim=True).clamp_min(1e-8)
        anchors = [attention_anchor((regions / peak) ** p, grid) for p in _ANCHOR_POWERS]
        anchor = anchors[_BASE_ANCHOR]
        delta = self.refine(torch.cat([*anchors, stats], dim=-1))
        cx = anchor[..., 0] + delta[..., 0] * anchor[..., 2]
        cy = anchor[..., 1] + delta[..., 1] * anchor[..., 3]
        w = anchor[..., 2] * delta[..., 2].clamp(-_MAX_LOG_SCALE, _MAX_LOG_SCALE).exp()
        h = anchor[..., 3] * delta[..., 3].clamp(-_MAX_LOG_SCALE, _MAX_LOG_SCALE).exp()
        box = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        return GroundingOutput(in_image_logit=logit, box=box)


def generalized_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalised IoU of matching rows of two ``[..., 4]`` box tensors (Rezatofighi et al.,
    2019): IoU minus the share of the enclosing box that neither covers; in [-1, 1]."""
    area_a = (a[..., 2] - a[..., 0]).clamp_min(0) * (a[..., 3] - a[..., 1]).clamp_min(0)
    area_b = (b[..., 2] - b[..., 0]).clamp_min(0) * (b[..., 3] - b[..., 1]).clamp_min(0)
    right, left = torch.minimum(a[..., 2], b[..., 2]), torch.maximum(a[..., 0], b[..., 0])
    bottom, top = torch.minimum(a[..., 3], b[..., 3]), torch.maximum(a[..., 1], b[..., 1])
    inter_w, inter_h = (right - left).clamp_min(0), (bottom - top).clamp_min(0)
    inter = inter_w * inter_h
    union = (area_a + area_b - inter).clamp_min(1e-8)
    hull_w = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    hull_h = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    hull = (hull_w * hull_h).clamp_min(1e-8)
    return inter / union - (hull - union) / hull


def grounding_loss(
    output: GroundingOutput,
    index: torch.Tensor,
    in_image: torch.Tensor,
    boxes: torch.Tensor,
    box_mask: torch.Tensor,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
) -> torch.Tensor:
    """Presence cross-entropy over the gold entities ``index`` ([N, 2] post, span), plus, for
    those in the image, L1 and generalised-IoU losses against the gold box the prediction is
    nearest (an entity may have several boxes: ``boxes [N, M, 4]``, ``box_mask [N, M]``)."""
    posts, spans = index.unbind(1)
    logits = output.in_image_logit[posts, spans]
    loss = F.binary_cross_entropy_with_logits(logits, in_image)
    boxed = box_mask.any(-1)
    if bool(boxed.any()):
        predicted = output.box[posts, spans][boxed]  # [n, 4]
        gold, mask = boxes[boxed], box_mask[boxed]  # [n, M, 4], [n, M]
        giou = generalized_iou(predicted.unsqueeze(1), gold)  # [n, M]
        nearest = giou.detach().masked_fill(~mask, -2.0).argmax(-1)
        chosen = gold[torch.arange(len(gold), device=gold.device), nearest]
        best = giou[torch.arange(len(gold), device=gold.device), nearest]
        l1 = (predicted - chosen).abs().sum(-1).mean()
        loss = loss + l1_weight * l1 + giou_weight * (1 - best).mean()
    return loss
