"""Entities compete for the picture: a second span-to-region pass over a post's entities.

Per-span attention decides alone where each name is. When a post names two things, the rule
that ties each name to its part of the picture is a relation ("the first-mentioned is on the
left"), and a span that cannot see the other name cannot follow it; learned from entity types
alone, both names then settle on one cue. In the competitive pass each visual token's weight
is also shared out among the post's entity spans (a softmax over the spans, as slot attention
normalises over slots; Locatello et al., 2020), so a cue goes to the name that claims it most,
and the relation becomes a comparison the attention can learn: the earlier name claims the
left more than the later one does.

Training runs the pass over the gold entities of each post that has two or more and adds its
cross-entropy to the loss; prediction runs it over the entities of a first, ordinary pass and
their types are read from it. Posts with fewer than two entities are not changed.
"""

from __future__ import annotations

import torch

from smner.data.spans import decode_non_overlapping


def groups_from_labels(labels: torch.Tensor, span_mask: torch.Tensor) -> torch.Tensor:
    """``[B, S]``: the gold entity spans of each post that has two or more."""
    entities = (labels > 0) & span_mask
    return entities & (entities.sum(1, keepdim=True) >= 2)


def groups_from_logits(
    logits: torch.Tensor, spans: torch.Tensor, span_mask: torch.Tensor
) -> torch.Tensor:
    """``[B, S]``: the entities a first pass predicts (non-overlapping, as decoded) of each
    post where it predicts two or more."""
    probs = logits.detach().float().softmax(-1)
    scores, label_ids = probs.max(-1)
    label_ids = label_ids.masked_fill(~span_mask, 0)
    group = torch.zeros_like(span_mask)
    spans_np = spans.cpu().numpy()
    index = {(int(s), int(e)): i for i, (s, e) in enumerate(spans_np)}
    labels_np, scores_np = label_ids.cpu().numpy(), scores.cpu().numpy()
    names = ["O"] * probs.size(-1)  # labels are not read, only which spans survive
    for b in range(logits.size(0)):
        kept = decode_non_overlapping(spans_np, labels_np[b], scores_np[b], names)
        if len(kept) >= 2:
            for entity, _ in kept:
                group[b, index[(entity.start, entity.end)]] = True
    return group


def members(group: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The group's spans gathered per post: ``(index [B, G], valid [B, G])``, G the largest
    group (at least 1); padding entries point one past the last span."""
    counts = group.sum(1)
    width = max(int(counts.max()) if counts.numel() else 0, 1)
    spans = group.size(1)
    # stable order: members first, by position
    order = torch.argsort((~group).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=group.device)[None, :] < counts[:, None]
    return order.masked_fill(~valid, spans), valid


def shared_out(
    logits: torch.Tensor, weights: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Competitive attention weights ``[B, H, G, N]``: each member's ordinary weights times its
    share of each key among the post's members (a softmax over the members of the logits
    ``/ temperature``), normalised again over the keys. ``logits`` are the attention scores
    with ignored keys at ``-inf``, ``weights`` their softmax over the keys."""
    excluded = ~valid[:, None, :, None]
    share = (logits / temperature).masked_fill(excluded, float("-inf")).softmax(2)
    share = torch.nan_to_num(share, nan=0.0)  # keys no member may see
    claimed = weights * share
    total = claimed.sum(-1, keepdim=True)
    # a member that every other member outbids everywhere keeps its own weights
    return torch.where(total > 1e-12, claimed / total.clamp_min(1e-12), weights)
