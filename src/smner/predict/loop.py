"""From examples to predictions: the one inference loop under evaluation, training's dev
scoring and the :class:`~smner.predict.predictor.Predictor`.

Devices, batching, collation and prediction in length order. Evaluation and training import
this module; nothing here imports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm

from smner.data.images import ImageStatus
from smner.data.types import Example
from smner.errors import SmnerError
from smner.model.base import NERModel, PredictedEntity
from smner.predict.image_input import ImageProvider
from smner.processing.batching import ImageInput, PostImages
from smner.processing.processor import PreparedPost, Processor


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda[:N]`` or ``mps`` as a device; one that is not here is an error
    now, not a traceback at the first step."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise SmnerError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SmnerError(f"device {name!r}: no CUDA GPU is available here; use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SmnerError(
                f"device {name!r}: there are {torch.cuda.device_count()} CUDA GPU(s) here"
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SmnerError(f"device {name!r}: MPS is not available here; use cpu or auto")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise SmnerError(f"device {name!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield list(order[start : start + size])


@torch.no_grad()
def forward(
    model: NERModel,
    processor: Processor,
    prepared: Sequence[PreparedPost],
    device: torch.device | str,
) -> list[list[PredictedEntity]]:
    """The one stage of a prediction that runs on the device: a batch of prepared posts in,
    decoded entities out. Pictures are encoded there and their features stay there; only the
    decoded spans, scores and attention maps come back."""
    images = visual_inputs(model, processor, prepared, device)
    batch = processor([p.words for p in prepared], None, images).to(device)
    return model.predict(batch)


def visual_inputs(
    model: NERModel,
    processor: Processor,
    prepared: Sequence[PreparedPost],
    device: torch.device | str,
) -> list[PostImages] | None:
    """Each post's image input: what was prepared for it (cached features or pixels), or its
    pictures' features (a list, one per image slot, for a post given several images), all
    computed in one call of the image encoder on the device."""
    encoder = model.image_encoder
    if encoder is None:
        return None
    inputs: list[PostImages] = []
    places: list[tuple[int, int | None]] = []  # (post, slot: None for a one-image post)
    pictures: list[Image.Image] = []
    for i, post in enumerate(prepared):
        if post.pictures is not None:
            inputs.append([None] * len(post.pictures))
            for j, picture in enumerate(post.pictures):
                if picture is not None:
                    places.append((i, j))
                    pictures.append(picture)
            continue
        inputs.append(post.image)
        if post.image is None and post.picture is not None:
            places.append((i, None))
            pictures.append(post.picture)
    if pictures:
        features = encoder(processor.pixels(pictures).to(device))  # type: ignore[arg-type]
        for k, (i, j) in enumerate(places):
            found = ImageInput(pooled=features.pooled[k], regions=features.regions[k])
            if j is None:
                inputs[i] = found
            else:
                slots = inputs[i]
                assert isinstance(slots, list)
                slots[j] = found
    return inputs


@torch.no_grad()
def predict_examples(
    model: NERModel,
    processor: Processor,
    examples: Sequence[Example],
    images: ImageProvider,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "predict",
) -> list[list[PredictedEntity]]:
    """Predictions for every corpus example, in order (sorted by length inside for speed),
    through the same :func:`forward` stage as the Predictor's."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    results: list[list[PredictedEntity]] = [[] for _ in examples]
    bar = tqdm(total=len(examples), desc=description, disable=not progress, unit="post")
    for chunk in batches(order, batch_size):
        given = images(chunk) or [None] * len(chunk)
        prepared = [
            PreparedPost(
                examples[i].tokens,
                None,
                ImageStatus.OK if _any_image(image) else ImageStatus.NO_IMAGE,
                image=image,
            )
            for i, image in zip(chunk, given, strict=True)
        ]
        for i, post in zip(chunk, forward(model, processor, prepared, device), strict=True):
            results[i] = post
        bar.update(len(chunk))
    bar.close()
    return results


def _any_image(image: PostImages) -> bool:
    if image is None or isinstance(image, ImageInput):
        return image is not None
    return any(slot is not None for slot in image)
