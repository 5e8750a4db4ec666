"""Image preprocessing: resize the shorter side, centre-crop, normalise per channel.

PIL + numpy on purpose: torchvision does not import beside the CPU torch wheel these machines
use, and Hugging Face's fast image processors need it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image

from smner.errors import SmnerError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

#: Largest side an image is resized to before cropping: a saved folder asking for more would
#: make every image cost gigabytes.
MAX_PREPROCESSING_SIDE = 4096


@dataclass(frozen=True)
class ImagePreprocessing:
    """Resize the shorter side to ``resize``, centre-crop ``size``, normalise per channel.

    The defaults are the ImageNet recipe of the paper's ResNet (256 then 224, ImageNet mean/std).
    """

    size: int = 224
    resize: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resample: str = "bicubic"

    def __post_init__(self) -> None:
        sides = (self.size, self.resize)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in sides):
            raise SmnerError(f"image preprocessing sizes must be integers, got {sides}")
        if self.resize > MAX_PREPROCESSING_SIDE:
            raise SmnerError(
                f"image preprocessing resize={self.resize} is over {MAX_PREPROCESSING_SIDE} px"
            )
        if self.size <= 0 or self.resize < self.size:
            raise SmnerError(
                f"image preprocessing needs 0 < size <= resize, got size={self.size}, "
                f"resize={self.resize}"
            )
        channels = (*self.mean, *self.std)
        if not all(isinstance(v, float) and math.isfinite(v) for v in channels):
            raise SmnerError("image preprocessing mean and std must be finite numbers")
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise SmnerError("image preprocessing needs 3 mean values and 3 positive std values")
        if self.resample not in _RESAMPLE:
            raise SmnerError(f"image resample must be one of {sorted(_RESAMPLE)}")

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """A float32 batch ``[B, 3, size, size]`` ready for the backbone."""
        if not images:
            return torch.empty(0, 3, self.size, self.size)
        return torch.from_numpy(np.stack([self._one(image) for image in images]))

    def _one(self, image: Image.Image) -> np.ndarray:
        if image.mode != "RGB":
            image = image.convert("RGB")
        # Like torchvision's Resize(int) + CenterCrop, but only the cropped part is resampled:
        # a 1 x 40000 strip would otherwise become a multi-gigapixel intermediate image.
        box = self.crop_box(*image.size)
        # reducing_gap makes large photos fast to shrink at no visible cost.
        image = image.resize(
            (self.size, self.size), _RESAMPLE[self.resample], box=box, reducing_gap=3.0
        )
        array = np.asarray(image, dtype=np.float32) / 255.0
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(((array - mean) / std).transpose(2, 0, 1))

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The part of a ``width`` x ``height`` image the model sees, in its own pixels.

        The short side is scaled to ``resize`` and the centre ``size`` square is kept; :meth:`_one`
        resamples exactly this box, and heatmaps are drawn over it.
        """
        if width <= height:
            new_w, new_h = self.resize, max(self.resize, int(self.resize * height / width))
        else:
            new_w, new_h = max(self.resize, int(self.resize * width / height)), self.resize
        left, top = round((new_w - self.size) / 2), round((new_h - self.size) / 2)
        sx, sy = width / new_w, height / new_h
        return (left * sx, top * sy, (left + self.size) * sx, (top + self.size) * sy)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean"] = list(self.mean)
        data["std"] = list(self.std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImagePreprocessing:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SmnerError(f"unknown image preprocessing settings: {', '.join(unknown)}")
        values = dict(data)
        try:
            for key in ("mean", "std"):
                if key in values:
                    values[key] = tuple(float(v) for v in values[key])
        except (TypeError, ValueError):
            raise SmnerError("image preprocessing mean and std must be lists of numbers") from None
        return cls(**values)
