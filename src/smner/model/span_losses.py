"""SMNER's supervised losses over spans: the entity loss every model trains with, and the
optional box supervision of the span-to-region attention."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from smner.config.model import SMNERConfig
from smner.model.visual_tokens import FIRST_REGION
from smner.processing.batching import Batch


def span_loss(
    config: SMNERConfig, logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Weighted cross-entropy over each post's spans, then the mean over posts.

    Entity spans weigh more than the rest. Normalising per post makes the loss of a batch the
    mean of its posts' losses, so data-parallel shards average to the same gradient.
    """
    ce = F.cross_entropy(
        logits.transpose(1, 2),
        labels,
        reduction="none",
        label_smoothing=config.label_smoothing,
    )  # [B, S]
    weights = torch.where(labels > 0, config.entity_weight, config.non_entity_weight) * mask.to(
        ce.dtype
    )
    per_post = (ce * weights).sum(1) / weights.sum(1).clamp_min(1e-8)
    return per_post.mean()


def box_attention_loss(
    attention: torch.Tensor, batch: Batch, has_image: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of each boxed entity's span attention against its box's coverage of the
    grid. Mass on the global or no-image token counts as missing the box. Posts read without
    their picture this step (``has_image`` false) take no part."""
    assert batch.attention_target_index is not None and batch.attention_target is not None
    seen = has_image[batch.attention_target_index[:, 0]]
    if not bool(seen.any()):
        return attention.new_zeros(())
    posts, spans = batch.attention_target_index[seen].unbind(1)
    regions = attention[posts, spans, FIRST_REGION:]  # [N, M * K]
    target = batch.attention_target[seen]  # [N, K]: over the post's first image
    if target.size(-1) < regions.size(-1):
        target = F.pad(target, (0, regions.size(-1) - target.size(-1)))
    log_attention = regions.clamp_min(1e-8).log()
    return -(target * log_attention).sum(-1).mean()
