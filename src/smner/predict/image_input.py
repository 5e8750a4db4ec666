"""What each post contributes of its image to a batch, for any model and backbone setting.

A frozen backbone's features are computed once per distinct image (and cached on disk across
runs, keyed by the encoder's weights and preprocessing); a trainable backbone gets pixels,
loaded and prepared by the model's :class:`~smner.processing.processor.Processor` batch by batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from smner.data.images import ImageStore
from smner.data.types import Example
from smner.model.base import NERModel
from smner.predict.feature_cache import ImageFeatureCache, cached_features
from smner.processing.batching import ImageInput
from smner.processing.processor import Processor


class ImageProvider:
    """``provider(indices) -> [ImageInput | None]`` for the examples it was built on."""

    def __init__(
        self,
        model: NERModel,
        processor: Processor,
        examples: Sequence[Example],
        store: ImageStore,
        cache_dir: str | Path | None = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.processor = processor
        self.examples = examples
        self.store = store
        self.features: list[ImageInput | None] | None = None
        image = model.image_encoder
        self.enabled = image is not None
        if not self.enabled:
            return
        if not model.config.train_image_encoder:
            cache = (
                ImageFeatureCache(Path(cache_dir).expanduser(), image.fingerprint())
                if cache_dir
                else None
            )
            items, _grid = cached_features(
                image,
                store,
                [ex.image_id for ex in examples],
                cache,
                progress=progress,
                pixels=processor.pixels,
            )
            # Half precision in memory halves the footprint of a large image set; batches are
            # assembled in float32 again by the collator.
            self.features = [
                ImageInput(pooled=item[0].half(), regions=item[1].half())
                if item is not None
                else None
                for item in items
            ]
        else:
            for ex in examples:  # count outcomes once, up front, like the frozen path
                store.load(ex.image_id)

    def __call__(self, indices: Sequence[int]) -> list[ImageInput | None] | None:
        if not self.enabled:
            return None
        if self.features is not None:
            return [self.features[i] for i in indices]
        inputs: list[ImageInput | None] = []
        for i in indices:
            picture, _ = self.store.load(self.examples[i].image_id, count=False)
            inputs.append(
                ImageInput(pixels=self.processor.pixels([picture])[0])
                if picture is not None
                else None
            )
        return inputs


class SubsetImages:
    """An :class:`ImageProvider` restricted to some of its examples (a rank's dev share)."""

    def __init__(self, provider: ImageProvider, indices: list[int]) -> None:
        self.provider, self.indices = provider, indices

    def __call__(self, local: Sequence[int]) -> list[ImageInput | None] | None:
        return self.provider([self.indices[i] for i in local])
