"""From examples to predictions: the one inference loop under evaluation, training's dev
scoring and the :class:`~smner.predict.predictor.Predictor`.

Devices, batching, collation and prediction in length order. Evaluation and training import
this module; nothing here imports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from smner.data.types import Entity, Example
from smner.errors import SmnerError
from smner.model.base import NERModel, PredictedEntity
from smner.predict.image_input import ImageProvider
from smner.processing.batching import Batch, BoxCoords, Collator


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


def collate(
    processor: Collator,
    examples: Sequence[Example],
    indices: Sequence[int],
    images: ImageProvider,
    with_labels: bool,
    attention_targets: Sequence[dict[Entity, np.ndarray] | None] | None = None,
    box_targets: Sequence[dict[Entity, list[BoxCoords]] | None] | None = None,
) -> Batch:
    chosen = [examples[i] for i in indices]
    return processor(
        [ex.tokens for ex in chosen],
        [ex.entities for ex in chosen] if with_labels else None,
        images(indices),
        [attention_targets[i] for i in indices] if attention_targets is not None else None,
        [box_targets[i] for i in indices] if box_targets is not None else None,
    )


@torch.no_grad()
def predict_examples(
    model: NERModel,
    processor: Collator,
    examples: Sequence[Example],
    images: ImageProvider,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    progress: bool = False,
    description: str = "predict",
) -> list[list[PredictedEntity]]:
    """Predictions for every example, in order (sorted by length inside for speed)."""
    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]))
    results: list[list[PredictedEntity]] = [[] for _ in examples]
    bar = tqdm(total=len(examples), desc=description, disable=not progress, unit="post")
    for chunk in batches(order, batch_size):
        batch = collate(processor, examples, chunk, images, with_labels=False).to(device)
        for i, post in zip(chunk, model.predict(batch), strict=True):
            results[i] = post
        bar.update(len(chunk))
    bar.close()
    return results
