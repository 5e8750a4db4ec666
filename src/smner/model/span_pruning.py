"""Span pruning at prediction: only the spans the text already finds likely go through the
span-to-region attention.

A post of 20 words has over a hundred candidate spans, and the cross-attention block with its
feed-forward network runs for each; a post names a handful of entities. With
``visual_context = "context"`` the block's output for a post without an image is one vector
(the "no image" token, the only key it may attend to) for every span, so the classifier on
that vector is the span's *text-side* score: what the model predicts with no picture. At
prediction the spans are ranked by it (the probability of being any entity), the best
``span_pruning`` of each post with an image go through the block and the classifier again,
and the rest are non-entities, as span-based NER models commonly prune (Lee et al., 2017;
Zhong and Chen, 2021). Posts without an image take the text-side logits, which are what the
full path computes for them. Training never prunes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from smner.errors import SmnerError
from smner.model.grounding import GroundingOutput
from smner.model.visual_tokens import FIRST_REGION, NO_IMAGE, chosen_image_attention, gated

#: the logit given to every entity type of a pruned span (its non-entity logit is 0), and to
#: its presence in the image
PRUNED_LOGIT = -1e4


def text_side_logits(
    spans: torch.Tensor,
    no_image: torch.Tensor,
    block: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    classifier: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each span's logits when its post has no image ``[B, S, C]``, and the block's output for
    that case ``[B, 1, d]`` (one cross-attention over the no-image token alone: its weight is 1
    whatever the query, so one query per post gives every span's context)."""
    size = spans.size(0)
    alone = torch.zeros(size, 1, dtype=torch.bool, device=spans.device)
    context, _ = block(spans[:, :1], no_image.unsqueeze(1), alone)
    return classifier(torch.cat([spans, context.expand_as(spans)], dim=-1)), context


def top_spans(logits: torch.Tensor, span_mask: torch.Tensor, keep: int) -> torch.Tensor:
    """``[B, keep]``: the index of each post's ``keep`` spans most likely an entity (padding
    spans last)."""
    entity = 1.0 - logits.float().softmax(-1)[..., 0]
    entity = entity.masked_fill(~span_mask, -1.0)
    return entity.topk(keep, dim=1).indices


def gather_rows(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values [B, S, ...]`` at ``index [B, k]`` -> ``[B, k, ...]``."""
    shape = (*index.shape, *values.shape[2:])
    expanded = index.reshape(*index.shape, *([1] * (values.dim() - 2))).expand(shape)
    return values.gather(1, expanded)


def scatter_rows(base: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``base [B, S, ...]`` with ``rows [B, k, ...]`` written at ``index [B, k]``."""
    expanded = index.reshape(*index.shape, *([1] * (rows.dim() - 2))).expand(rows.shape)
    return base.scatter(1, expanded, rows.to(base.dtype))


def pruned_logits(text_logits: torch.Tensor, has_image: torch.Tensor) -> torch.Tensor:
    """What a post's spans start from before the kept spans' logits are written in: the
    text-side logits for a post without an image, "not an entity" for one with an image."""
    pruned = torch.full_like(text_logits, PRUNED_LOGIT)
    pruned[..., 0] = 0.0
    return torch.where(has_image[:, None, None], pruned, text_logits)


def pruned_alignment(
    layers: tuple[Callable[..., Any], Callable[[torch.Tensor], torch.Tensor], Any],
    batch: Any,
    spans: torch.Tensor,
    no_image: torch.Tensor,
    visual: tuple[torch.Tensor, torch.Tensor],
    offsets: tuple[torch.Tensor | None, torch.Tensor | None],
    images: tuple[torch.Tensor, tuple[int, int] | None],
    keep: int,
    gate: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, GroundingOutput | None]:
    """Logits, attention and grounding with only each post's ``keep`` best spans by their
    text-side score through the cross-attention (the rest are non-entities). ``layers``: the
    span-to-region block, the classifier and the grounding head (None: no grounding);
    ``images``: the image slots and the region grid; ``gate``: the gated bottleneck's gate of
    each post, if any."""
    block, classifier, grounding_head = layers
    slots, grid = images
    tokens, ignore = visual
    text_logits, context = text_side_logits(spans, no_image, block, classifier)
    exporting = torch.compiler.is_exporting()
    if not exporting and not bool(batch.has_image.any()):  # the text side is the answer
        attention = spans.new_zeros(*spans.shape[:2], tokens.size(1))
        attention[..., NO_IMAGE] = 1.0
        return text_logits, attention, None
    if exporting:  # a graph prunes posts of any length: at most all their spans
        keep = torch.sym_min(keep, spans.size(1))
    index = top_spans(text_logits, batch.span_mask, keep)
    kept = gather_rows(spans, index)
    queries, keys = offsets
    if queries is not None:
        queries = gather_rows(queries.expand(spans.size(0), -1, -1), index)
    attended, attention_kept = block(kept, tokens, ignore, queries, keys)
    if gate is not None:
        attended = gated(attended, context, gate)
    logits_kept = classifier(torch.cat([kept, attended], dim=-1))
    logits = scatter_rows(pruned_logits(text_logits, batch.has_image), index, logits_kept)
    # rows of pruned spans: all weight on the no-image token (never read: they are "O")
    attention = torch.zeros(
        (*spans.shape[:2], tokens.size(1)), dtype=attention_kept.dtype, device=spans.device
    )
    attention[..., NO_IMAGE] = 1.0
    attention = scatter_rows(attention, index, attention_kept)
    grounding = None
    if grounding_head is not None and grid is not None:
        found = grounding_head(
            kept, attended, chosen_image_attention(attention_kept, slots), grid, FIRST_REGION
        )
        absent = torch.full(spans.shape[:2], PRUNED_LOGIT, device=spans.device)
        grounding = GroundingOutput(
            in_image_logit=scatter_rows(absent, index, found.in_image_logit),
            box=scatter_rows(spans.new_zeros(*spans.shape[:2], 4), index, found.box),
        )
    return logits, attention, grounding


def set_span_pruning(model: Any, keep: int) -> None:
    """Make ``model`` (a PyTorch SMNER) prune to ``keep`` spans a post at prediction (0: off),
    whatever its saved config says; SmnerError for a model that cannot."""
    from smner.config.model import SMNERConfig

    config = getattr(model, "config", None)
    if getattr(model, "backend", "pytorch") != "pytorch":
        raise SmnerError(
            "an exported ONNX graph prunes spans as it was exported: choose it with "
            "'smner export --span-pruning N' (or load the folder with backend='pytorch')"
        )
    if not isinstance(config, SMNERConfig) or not config.uses_cross_attention:
        raise SmnerError("span pruning applies to SMNER models with span-to-region attention")
    if keep and config.visual_context != "context":
        raise SmnerError(
            "span pruning needs model.visual_context 'context' (with 'block' the text-side "
            "score of a span is not what the model computes without a picture)"
        )
    model.config = dataclasses.replace(config, span_pruning=keep)
