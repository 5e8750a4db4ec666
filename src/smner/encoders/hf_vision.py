"""Any Hugging Face vision model as an image backbone (ResNet, ConvNeXt, ViT, CLIP vision, ...)."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import torch

from smner.encoders.hf_config import (
    DROP_POOLER_KEY,
    hidden_dim,
    preprocessing_from_hf,
    read_preprocessor_config,
    vision_tower_config,
)
from smner.encoders.image_base import ImageEncoder, ImageFeatures, flatten_feature_map
from smner.encoders.preprocessing import ImagePreprocessing
from smner.errors import SmnerError

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


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
        vision_config = vision_tower_config(config)
        if backbone is None:
            from transformers import AutoModel

            try:
                backbone = AutoModel.from_config(vision_config)
            except (ValueError, KeyError) as error:
                raise SmnerError(f"cannot build image encoder {name!r}: {error}") from error
        super().__init__(name, hidden_dim(vision_config), preprocessing)
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
            vision_config = vision_tower_config(config)
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
            read_preprocessor_config(name_or_path), backbone.config
        )
        return cls(backbone.config, name, preprocessing, backbone=backbone, drop_pooler=drop_pooler)

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        output = self.backbone(pixel_values=pixel_values)
        hidden = output[0]
        if hidden.dim() == 4:
            regions, grid = flatten_feature_map(hidden)
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
            config[DROP_POOLER_KEY] = True
        return config
