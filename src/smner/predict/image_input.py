"""What each post contributes of its image to a batch, for any model and backbone setting.

A frozen backbone's features are computed once per distinct image (and cached on disk across
runs, keyed by the encoder's weights and preprocessing); a trainable backbone gets pixels,
loaded and prepared by the model's :class:`~smner.processing.processor.Processor` batch by batch.

A post with several images (``Example.image_ids``, e.g. MNER-MI) gives a model that takes several
(``model.max_images`` > 1) a list, one input per image slot (None where an image is missing), up
to that many; a one-image model gets its first image, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from smner.data.images import ImageStore
from smner.data.types import Example
from smner.model.base import NERModel
from smner.predict.feature_cache import ImageFeatureCache, cached_features
from smner.processing.batching import ImageInput, PostImages
from smner.processing.processor import Processor


class ImageProvider:
    """``provider(indices) -> [ImageInput | None]`` for the examples it was built on (a list
    of them, one per image slot, for a post of several images and a model that takes them)."""

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
        most = getattr(model.config, "max_images", 1)
        #: each example's image ids: its slots (several) or its one image (a plain string)
        self.ids: list[str | list[str] | None] = [
            ex.image_ids[:most] if ex.image_ids is not None and most > 1 else ex.image_id
            for ex in examples
        ]
        #: where each example's images start in the flat list of ids
        flat: list[str | None] = []
        self.starts: list[int] = []
        for ids in self.ids:
            self.starts.append(len(flat))
            flat.extend(ids if isinstance(ids, list) else [ids])
        if not model.config.train_image_encoder:
            cache = (
                ImageFeatureCache(Path(cache_dir).expanduser(), image.fingerprint())
                if cache_dir
                else None
            )
            items, _grid = cached_features(
                image,
                store,
                flat,
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
            for image_id in flat:  # count outcomes once, up front, like the frozen path
                store.load(image_id)

    def __call__(self, indices: Sequence[int]) -> list[PostImages] | None:
        if not self.enabled:
            return None
        inputs: list[PostImages] = []
        for i in indices:
            ids = self.ids[i]
            if isinstance(ids, list):
                start = self.starts[i]
                inputs.append([self._input(start + k, ids[k]) for k in range(len(ids))])
            else:
                inputs.append(self._input(self.starts[i], ids))
        return inputs

    def _input(self, position: int, image_id: str | None) -> ImageInput | None:
        if self.features is not None:
            return self.features[position]
        picture, _ = self.store.load(image_id, count=False)
        return (
            ImageInput(pixels=self.processor.pixels([picture])[0]) if picture is not None else None
        )


class SubsetImages:
    """An :class:`ImageProvider` restricted to some of its examples (a rank's dev share)."""

    def __init__(self, provider: ImageProvider, indices: list[int]) -> None:
        self.provider, self.indices = provider, indices

    def __call__(self, local: Sequence[int]) -> list[PostImages] | None:
        return self.provider([self.indices[i] for i in local])
