"""Translating Hugging Face vision checkpoints: their configs (two-tower models included) and
their ``preprocessor_config.json`` into smner's :class:`ImagePreprocessing`, read as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from smner.encoders.preprocessing import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessing
from smner.errors import SmnerError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

# PIL's integer codes, as Hugging Face's preprocessor_config.json stores them.
_RESAMPLE_CODES = {
    int(Image.Resampling.BILINEAR): "bilinear",
    int(Image.Resampling.BICUBIC): "bicubic",
}


# Marks, in config_dict(), a checkpoint without pooler weights (e.g. a ViT classifier loaded as a
# plain ViTModel): its pooler would be random, so pooled falls back to the mean of the regions.
DROP_POOLER_KEY = "smner_drop_pooler"


def vision_tower_config(config: PretrainedConfig) -> PretrainedConfig:
    """The vision tower's config of a two-tower model (CLIP, SigLIP, ...), else ``config``."""
    vision = getattr(config, "vision_config", None)
    return vision if vision is not None else config


def hidden_dim(config: PretrainedConfig) -> int:
    """The width of a backbone's last features (its last stage's for ResNet-like models)."""
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    size = getattr(config, "hidden_size", None)
    if size is None:
        raise SmnerError(f"cannot tell the feature size of a {config.model_type!r} backbone")
    return int(size)


#: Bounds of an encoder architecture read from a saved config, by what the key counts. No
#: checkpoint comes near them; past them, building the modules alone (before any weight is
#: compared) would take minutes. Keys of the model families that name them otherwise count too.
ENCODER_LIMITS: dict[str, tuple[tuple[str, ...], int]] = {
    "layers": (
        ("num_hidden_layers", "num_layers", "n_layers", "n_layer", "encoder_layers", "depths"),
        256,
    ),
    "heads": (("num_attention_heads", "n_heads", "n_head", "encoder_attention_heads"), 1024),
    "width": (("hidden_size", "hidden_sizes", "dim", "n_embd", "d_model", "embedding_size"), 65536),
    "vocabulary": (("vocab_size",), 2**22),
}
#: Keys holding the config of one tower of a two-tower model (CLIP, SigLIP, ...).
TOWER_KEYS = ("text_config", "vision_config")


def check_encoder_sizes(values: Mapping[str, Any], where: str) -> None:
    """Refuse a layer, head, width or vocabulary count of an encoder config (and of its
    towers) that is not a whole number within :data:`ENCODER_LIMITS`; a list (stage depths,
    stage widths) is bounded item by item, and depths also in their sum."""
    for what, (keys, limit) in ENCODER_LIMITS.items():
        for key in keys:
            value = values.get(key)
            if value is None:
                continue
            items = value if isinstance(value, list) else [value]
            if (
                not items
                or not all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= limit
                    for v in items
                )
                or (key == "depths" and sum(items) > limit)
            ):
                raise SmnerError(
                    f"{where}.{key}: {value!r} is out of range; expected {what} as a whole "
                    f"number from 1 to {limit}"
                )
    for key in TOWER_KEYS:
        tower = values.get(key)
        if isinstance(tower, Mapping):
            check_encoder_sizes(tower, f"{where}.{key}")


def hf_config_from_dict(data: Mapping[str, Any]) -> tuple[PretrainedConfig, bool]:
    """The config :meth:`HFVisionEncoder.config_dict` wrote, and whether the pooler was dropped."""
    from transformers import CONFIG_MAPPING

    check_encoder_sizes(data, "image encoder config")
    values = dict(data)
    drop_pooler = bool(values.pop(DROP_POOLER_KEY, False))
    model_type = values.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise SmnerError(f"image encoder config has an unknown model_type {model_type!r}")
    try:
        return CONFIG_MAPPING[model_type].from_dict(values), drop_pooler
    except (ValueError, TypeError, KeyError) as error:
        raise SmnerError(f"invalid {model_type!r} image encoder config: {error}") from error


def read_preprocessor_config(name_or_path: str) -> dict[str, Any] | None:
    """A checkpoint's ``preprocessor_config.json``, read as JSON (no image processor objects)."""
    folder = Path(name_or_path)
    if folder.is_dir():
        path = folder / "preprocessor_config.json"
        if not path.is_file():
            return None
    else:
        from transformers.utils import cached_file

        try:
            found = cached_file(
                name_or_path,
                "preprocessor_config.json",
                _raise_exceptions_for_missing_entries=False,
            )
        except OSError as error:
            raise SmnerError(
                f"cannot fetch the preprocessing of {name_or_path!r}: {error}"
            ) from error
        if found is None:
            return None
        path = Path(found)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise SmnerError(f"{path}: not a readable preprocessor config: {error}") from error
    if not isinstance(data, dict):
        raise SmnerError(f"{path}: a preprocessor config must be a JSON object")
    return data


def _edge(spec: Any) -> int | None:
    """The square side a Hugging Face ``size``/``crop_size`` entry asks for."""
    if isinstance(spec, int | float):
        return int(spec)
    if isinstance(spec, Mapping):
        if "shortest_edge" in spec:
            return int(spec["shortest_edge"])
        sides = [int(spec[k]) for k in ("height", "width") if k in spec]
        if sides:
            return min(sides)
    return None


def _channels(values: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
    if values is None:
        return default
    if isinstance(values, int | float):
        return (float(values),) * 3
    items = [float(v) for v in values]
    if len(items) != 3:
        raise SmnerError(f"expected 3 image channel values, got {items}")
    return (items[0], items[1], items[2])


def preprocessing_from_hf(
    processor: Mapping[str, Any] | None, config: PretrainedConfig | None = None
) -> ImagePreprocessing:
    """Our preprocessing from a ``preprocessor_config.json`` dict (None: defaults).

    Covers the common recipes: resize + crop (CLIP, DINOv2), resize/crop_pct (ResNet, ConvNeXt)
    and a fixed square (ViT, approximated by an aspect-preserving resize and a centre crop).
    Without a file, a transformer's own ``image_size`` is used, else the ImageNet 256/224 recipe.
    """
    processor = processor or {}
    resize_edge = _edge(processor.get("size"))
    crop_spec = processor.get("crop_size")
    crop_edge = _edge(crop_spec) if processor.get("do_center_crop", crop_spec is not None) else None
    crop_pct = processor.get("crop_pct")
    if crop_edge:
        size, resize = crop_edge, max(resize_edge or crop_edge, crop_edge)
    elif resize_edge and crop_pct:
        size, resize = resize_edge, round(resize_edge / float(crop_pct))
    elif resize_edge:
        size = resize = resize_edge
    else:
        image_size = getattr(config, "image_size", None) if config is not None else None
        if isinstance(image_size, list | tuple):
            image_size = min(int(v) for v in image_size)
        if isinstance(image_size, int):
            size = resize = image_size
        else:
            size, resize = 224, 256
    resample = _RESAMPLE_CODES.get(processor.get("resample", -1), "bicubic")
    return ImagePreprocessing(
        size=size,
        resize=resize,
        mean=_channels(processor.get("image_mean"), IMAGENET_MEAN),
        std=_channels(processor.get("image_std"), IMAGENET_STD),
        resample=resample,
    )
