"""The check an ONNX export passes before it is written: the graph's outputs against PyTorch's
on a few posts with and without images (logits, attention, grounding within a tolerance, and
the same decoded entities), see :func:`verify`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from smner.model.base import ModelOutput, NERModel, PredictedEntity
from smner.model.span_pruning import PRUNED_LOGIT
from smner.predict.onnx_backend import (
    OnnxModel,
    open_session,
)
from smner.processing.batching import Batch, ImageInput
from smner.processing.processor import Processor

#: largest difference allowed between the graph's and PyTorch's logits and attention weights


DEFAULT_TOLERANCE = 1e-3


#: the posts the export checks itself on (each is predicted with and without an image)
CHECK_POSTS: tuple[tuple[str, ...], ...] = (
    ("George", "visited", "Paris", "today"),
    ("RT", "@nytimes", ":", "Apple", "store", "opens", "in", "New", "York", "#nyc"),
    ("Manchester", "United", "beat", "Chelsea", "2", "-", "1", "at", "Old", "Trafford", "!"),
    ("lol",),
    ("Watching", "the", "Lakers", "with", "Kobe", "Bryant", "and", "LeBron", "James", "tonight"),
    ("Obama", "speaks", "at", "the", "United", "Nations", "http://t.co/x1"),
)


@dataclass
class Verification:
    """How the graph's outputs compare with PyTorch's on the check posts."""

    posts: int = 0
    posts_with_image: int = 0
    batches: int = 0
    tolerance: float = DEFAULT_TOLERANCE
    max_logit_diff: float = 0.0
    max_attention_diff: float = 0.0
    max_grounding_diff: float = 0.0
    entities_equal: bool = True
    #: spans whose most likely label is PyTorch's (1.0 for a float graph)
    span_label_agreement: float = 1.0
    #: spans a pruning graph kept where PyTorch pruned them or the reverse, their text-side
    #: scores tied at the cut (compared as PyTorch's)
    pruning_ties: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "posts": self.posts,
            "posts_with_image": self.posts_with_image,
            "batches": self.batches,
            "tolerance": self.tolerance,
            "max_logit_diff": _round(self.max_logit_diff),
            "max_attention_diff": _round(self.max_attention_diff),
            "max_grounding_diff": _round(self.max_grounding_diff),
            "entities_equal": self.entities_equal,
            "span_label_agreement": round(self.span_label_agreement, 6),
            "pruning_ties": self.pruning_ties,
            "passed": self.passed,
        }


def check_images(count: int) -> list[Image.Image]:
    """Deterministic pictures with some structure (blocks of colour and noise)."""
    rng = np.random.default_rng(0)
    pictures = []
    for i in range(count):
        pixels = rng.integers(0, 255, size=(96, 128, 3)).astype(np.uint8)
        pixels[: 48 + 8 * i, : 64 - 8 * i] = (40 * i % 255, 200, 90)
        pictures.append(Image.fromarray(pixels))
    return pictures


def with_features(
    model: NERModel, processor: Processor, posts: Sequence[Sequence[str]], images: Sequence[bool]
) -> Batch:
    """A batch of ``posts``, with image features where ``images`` says so."""
    inputs: list[ImageInput | None] | None = None
    encoder = model.image_encoder
    if encoder is not None:
        pictures = check_images(len(posts))
        with torch.no_grad():
            features = encoder(processor.pixels(pictures))
        inputs = [
            ImageInput(pooled=features.pooled[i], regions=features.regions[i]) if wanted else None
            for i, wanted in enumerate(images)
        ]
    return processor([list(p) for p in posts], None, inputs)


def check_batches(model: NERModel, processor: Processor) -> list[Batch]:
    """The batches the export is checked on: every check post with and without an image,
    in a mixed batch, a batch without images, a batch of one and one of each post alone."""
    posts = list(CHECK_POSTS)
    half = [i % 2 == 0 for i in range(len(posts))]
    batches = [
        with_features(model, processor, posts, half),
        with_features(model, processor, posts, [not h for h in half]),
        with_features(model, processor, posts, [False] * len(posts)),
        with_features(model, processor, posts[1:2], [True]),
        with_features(model, processor, posts[3:4], [False]),
    ]
    if model.image_encoder is None:
        batches = batches[2:]
    return batches


def session_model(model: NERModel, graph: Path) -> OnnxModel:
    return OnnxModel(model, open_session(graph), {"graph": graph.name})


def verify(
    model: NERModel,
    onnx_model: OnnxModel,
    batches: Sequence[Batch],
    tolerance: float,
    exact: bool,
) -> Verification:
    """Compare ``onnx_model`` with ``model`` on ``batches``. ``exact``: the outputs must be
    within ``tolerance`` and decode to the same entities (a float graph); otherwise only
    finite outputs of the right shapes are required, and the rest is measured (int8)."""
    result = Verification(tolerance=tolerance)
    agree = total = 0
    with torch.no_grad():
        for batch in batches:
            expected = model(batch)
            found = onnx_model(batch)
            if exact:
                found = _ties_as_pytorch(model, batch, expected, found, result)
            result.batches += 1
            result.posts += batch.size
            result.posts_with_image += int(batch.has_image.sum())
            _compare(result, batch, expected, found, exact)
            same = expected.logits.argmax(-1) == found.logits.argmax(-1)
            agree += int(same[batch.span_mask].sum())
            total += int(batch.span_mask.sum())
            if _entities(model.decode(batch, expected)) != _entities(
                onnx_model.decode(batch, found)
            ):
                result.entities_equal = False
                if exact:
                    result.problems.append("the decoded entities differ")
    result.span_label_agreement = agree / total if total else 1.0
    return result


def _compare(
    result: Verification, batch: Batch, expected: ModelOutput, found: ModelOutput, exact: bool
) -> None:
    images = batch.has_image.bool()
    inside = batch.span_mask.bool()  # padding spans (past a post's end) are never read
    pairs: list[tuple[str, torch.Tensor, torch.Tensor | None]] = [
        ("logits", expected.logits[inside], _rows(found.logits, inside))
    ]
    if expected.attention is not None and bool(images.any()):
        seen = inside & images[:, None]
        pairs.append(("attention", expected.attention[seen], _rows(found.attention, seen)))
    if expected.grounding is not None and bool(images.any()):
        grounding = found.grounding
        pairs.append(
            (
                "in_image_logit",
                expected.grounding.in_image_logit[images],
                None if grounding is None else grounding.in_image_logit[images],
            )
        )
        pairs.append(
            (
                "box",
                expected.grounding.box[images],
                None if grounding is None else grounding.box[images],
            )
        )
    for name, want, got in pairs:
        if got is None or tuple(got.shape) != tuple(want.shape):
            shape = None if got is None else list(got.shape)
            result.problems.append(f"{name}: shape {shape}, PyTorch's {list(want.shape)}")
            continue
        if not bool(torch.isfinite(got).all()):
            result.problems.append(f"{name}: not finite")
            continue
        diff = float((got.float() - want.float()).abs().max()) if want.numel() else 0.0
        key = {"logits": "max_logit_diff", "attention": "max_attention_diff"}.get(
            name, "max_grounding_diff"
        )
        setattr(result, key, max(getattr(result, key), diff))
        if exact and diff > result.tolerance:
            result.problems.append(f"{name} differ by {diff:.3g} (tolerance {result.tolerance})")


def _ties_as_pytorch(
    model: NERModel,
    batch: Batch,
    expected: ModelOutput,
    found: ModelOutput,
    result: Verification,
) -> ModelOutput:
    """``found`` with PyTorch's outputs for the spans the two runtimes pruned differently
    because their text-side scores tie at the cut (within the tolerance): which of two tied
    spans a post keeps is float noise, not a fault of the graph. A span kept by one and pruned
    by the other that is not such a tie is a problem."""
    swapped = (pruned_rows(expected.logits) != pruned_rows(found.logits)) & batch.span_mask
    if not bool(swapped.any()):
        return found
    keep = int(getattr(model.config, "span_pruning", 0))
    without_images = dataclasses.replace(batch, has_image=torch.zeros_like(batch.has_image))
    text = model(without_images).logits  # posts without an image: the text-side logits
    score = (1.0 - text.float().softmax(-1)[..., 0]).masked_fill(~batch.span_mask, -1.0)
    cut = score.topk(min(keep, score.size(1)), dim=1).values[:, -1:] if keep else score
    if bool((swapped & ((score - cut).abs() > result.tolerance)).any()):
        result.problems.append("span pruning kept other spans than PyTorch (not ties at the cut)")
    result.pruning_ties += int(swapped.sum())
    rows = swapped[..., None]
    attention = found.attention
    if attention is not None and expected.attention is not None:
        attention = torch.where(rows, expected.attention, attention)
    return dataclasses.replace(
        found, logits=torch.where(rows, expected.logits, found.logits), attention=attention
    )


def pruned_rows(logits: torch.Tensor) -> torch.Tensor:
    """``[B, S]``: the spans span pruning left out (every entity type at its pruned logit)."""
    return logits[..., 1:].amax(-1) <= PRUNED_LOGIT / 2


def _rows(tensor: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor | None:
    return None if tensor is None else tensor[rows]


def _entities(posts: list[list[PredictedEntity]]) -> list[list[tuple[int, int, str]]]:
    return [[(p.entity.start, p.entity.end, p.entity.type) for p in post] for post in posts]


# --- the manifest ------------------------------------------------------------------------------


def _round(value: float) -> float:
    return float(f"{value:.3g}")
