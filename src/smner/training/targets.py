"""What a training post's boxes teach the model: where each entity's span should look (the
attention target) and, for a grounding head, whether the entity is in the image and its box.

Both are computed once before training from ``data.box_dir`` and the images' sizes (read from
their headers), through the crop the model sees of each image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smner.data.boxes import box_to_crop, load_box_dir, upright_size
from smner.data.images import ImageStore
from smner.data.types import Entity, Example
from smner.evaluation.pointing import cell_coverage
from smner.model.base import NERModel
from smner.processing.batching import BoxCoords
from smner.processing.processor import Processor

#: per post, the target attention of each gold entity that has a box
AttentionTargets = list[dict[Entity, np.ndarray] | None]
#: per post with an image, every gold entity's boxes in crop coordinates (empty: not in it)
GroundingTargets = list[dict[Entity, list[BoxCoords]] | None]


@dataclass
class BoxSupervision:
    """The targets of the training posts, None where the model has nothing to supervise."""

    attention: AttentionTargets | None
    grounding: GroundingTargets | None

    def summary(self, examples: Sequence[Example]) -> str:
        """One line for the training log."""
        total = sum(len(ex.entities) for ex in examples)
        parts = []
        if self.attention is not None:
            boxed = sum(len(t) for t in self.attention if t)
            parts.append(f"attention supervised for {boxed} of {total} training entities")
        if self.grounding is not None:
            known = [boxes for post in self.grounding if post for boxes in post.values()]
            inside = sum(bool(boxes) for boxes in known)
            parts.append(f"grounding: {inside} of {len(known)} entities with images are in them")
        return "; ".join(parts) or "no box supervision"


def box_supervision(
    model: NERModel,
    processor: Processor,
    examples: Sequence[Example],
    box_dir: str | Path,
    image_dir: str | None,
) -> BoxSupervision:
    """Attention targets (see :func:`smner.evaluation.pointing.cell_coverage`) when the model
    explains and
    ``attention_supervision`` > 0, and grounding targets when the model grounds.

    An image with no box file has none of its post's entities in it (the convention of
    grounded-NER data, whose box files list only the objects there are)."""
    supervise = model.explains and model.config.attention_supervision > 0
    if not supervise and not model.grounds:
        return BoxSupervision(None, None)
    boxes = load_box_dir(box_dir, examples)
    store = ImageStore(image_dir)
    grid = model.image.output_grid()
    attention: AttentionTargets = []
    grounding: GroundingTargets = []
    for example in examples:
        own = boxes.get(example.image_id, {}) if example.image_id else {}
        needs_size = (supervise and own) or (model.grounds and example.image_id)
        size = upright_size(store.path_for(example.image_id)) if needs_size else None
        crop = processor.crop_box(*size) if size is not None else None
        targets: dict[Entity, np.ndarray] = {}
        if crop is not None and supervise:
            for entity, entity_boxes in own.items():
                target = cell_coverage(entity_boxes, crop, grid)
                if target is not None:
                    targets[entity] = target
        attention.append(targets or None)
        if crop is not None and model.grounds:
            grounding.append(
                {e: [box_to_crop(box, crop) for box in own.get(e, ())] for e in example.entities}
            )
        else:
            grounding.append(None)
    return BoxSupervision(attention if supervise else None, grounding if model.grounds else None)
