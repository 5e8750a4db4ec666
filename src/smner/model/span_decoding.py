"""SMNER's predictions from its span logits: the best non-overlapping spans of each post, each
with its heatmap over the image it attends to most, and its box where the model grounds."""

from __future__ import annotations

from smner.config.model import SMNERConfig
from smner.data.spans import decode_non_overlapping
from smner.model.base import ModelOutput, PredictedEntity
from smner.model.visual_tokens import FIRST_REGION, GLOBAL, attended_image
from smner.processing.batching import Batch


def decode_entities(
    batch: Batch, output: ModelOutput, config: SMNERConfig
) -> list[list[PredictedEntity]]:
    """Each post's predicted entities (:meth:`smner.model.smner.SMNER.decode`)."""
    probs = output.logits.float().softmax(-1)
    scores, label_ids = probs.max(-1)
    label_ids = label_ids.masked_fill(~batch.span_mask, 0)
    spans = batch.spans.cpu().numpy()
    label_np, score_np = label_ids.cpu().numpy(), scores.cpu().numpy()
    attention = image_index = None
    grid = output.grid
    if output.attention is not None:
        attention = output.attention.float().cpu().numpy()
        if grid is not None:
            image_index = attended_image(output.attention, batch.slot_mask()).cpu().numpy()
    in_image = boxes = None
    if output.grounding is not None:
        in_image = output.grounding.in_image_logit.float().sigmoid().cpu().numpy()
        boxes = output.grounding.box.float().cpu().numpy()
    results: list[list[PredictedEntity]] = []
    index_of = {(int(s), int(e)): i for i, (s, e) in enumerate(spans)}
    for b in range(batch.size):
        kept = decode_non_overlapping(spans, label_np[b], score_np[b], config.id_to_label)
        has_image = bool(batch.has_image[b])
        post = []
        for entity, score in kept:
            item = PredictedEntity(entity, score)
            if attention is not None and has_image:
                weights = attention[b, index_of[(entity.start, entity.end)]]
                item.global_attention = float(weights[GLOBAL])
                if grid is not None and image_index is not None:
                    chosen = int(image_index[b, index_of[(entity.start, entity.end)]])
                    item.image_index = chosen
                    item.attention = weights[FIRST_REGION:].reshape(-1, *grid)[chosen]
            if in_image is not None and boxes is not None and has_image:
                span = index_of[(entity.start, entity.end)]
                item.in_image = float(in_image[b, span])
                if item.in_image >= config.grounding_threshold:
                    item.box_in_crop = tuple(float(v) for v in boxes[b, span])  # type: ignore[assignment]
            post.append(item)
        results.append(post)
    return results
