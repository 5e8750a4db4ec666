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

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from smner.data.spans import decode_non_overlapping
from smner.model.span_pruning import gather_rows, scatter_rows


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


def competitive_pass(
    block: Any,
    classifier: Callable[[torch.Tensor], torch.Tensor],
    first: tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor],
    visual: tuple[torch.Tensor, torch.Tensor],
    offsets: tuple[torch.Tensor | None, torch.Tensor | None],
    temperature: float,
    has_image: torch.Tensor,
    labels: torch.Tensor | None = None,
    regate: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The pass over each post's entities, after the ordinary one (``first``: the batch, the
    span vectors, their logits and attention): in training ``(logits, attention, its
    cross-entropy over the gold entities)``; at prediction the entities' logits and attention
    rows replaced by the pass's, and no loss. ``block`` is the span-to-region block (its
    ``compete``), ``visual`` its tokens and ignored keys, ``offsets`` its query and key
    offsets; ``regate(attended, queries)`` applies the gated bottleneck's gate, if any."""
    batch, spans, logits, attention = first
    tokens, ignore = visual
    if labels is not None:
        group = groups_from_labels(labels, batch.span_mask)
    else:
        group = groups_from_logits(logits, batch.spans, batch.span_mask)
    group = group & has_image[:, None]
    if not bool(group.any()):
        return logits, attention, logits.new_zeros(()) if labels is not None else None
    index, valid = members(group)

    def padded(rows: torch.Tensor) -> torch.Tensor:  # one row past the last span
        return torch.cat([rows, rows[:, :1]], dim=1)

    queries = gather_rows(padded(spans), index)
    query_offsets, key_offsets = offsets
    if query_offsets is not None:
        query_offsets = gather_rows(padded(query_offsets.expand_as(spans)), index)
    attended, weights = block.compete(
        queries, tokens, ignore, valid, temperature, query_offsets, key_offsets
    )
    if regate is not None:
        attended = regate(attended, queries)
    competed = classifier(torch.cat([queries, attended], dim=-1))  # [B, G, C]
    if labels is not None:
        gold = gather_rows(padded(labels), index)
        return logits, attention, F.cross_entropy(competed[valid], gold[valid])
    # padding entries write into the extra row, which is dropped
    logits = scatter_rows(padded(logits), index, competed)[:, :-1]
    attention = scatter_rows(padded(attention), index, weights)[:, :-1]
    return logits, attention, None
