"""Models: SMNER and its baselines behind one interface, and :func:`build_model`."""

from __future__ import annotations

import json
import warnings
from dataclasses import replace
from typing import Any

from smner.config.model import ModelConfig
from smner.encoders.image import build_image_encoder
from smner.encoders.text import TextEncoder, resolve_text_encoder
from smner.model.base import ModelOutput, NERModel, PredictedEntity
from smner.model.smner import SMNER
from smner.model.tagger import BIOTagger
from smner.processing.processor import Processor


def build_model(config: ModelConfig) -> NERModel:
    """A new model with pretrained encoders, resolved from the names in ``config``.

    The resolved encoder architectures are written into the returned model's config, so that
    :meth:`NERModel.from_pretrained` can rebuild it later without any download.
    """
    text = TextEncoder.from_pretrained(
        resolve_text_encoder(config.text_encoder), config.word_pooling, config.sentence_pooling
    )
    # Through JSON, so the config equals what a saved folder reads back (e.g. int dict keys).
    text_config = json.loads(text.backbone.config.to_json_string(use_diff=False))
    config = replace(config, text_encoder_config=text_config)
    image = None
    if config.use_image:
        image = build_image_encoder(
            config.image_encoder, pretrained=True, regions=config.image_regions
        )
        config = replace(
            config,
            image_encoder_config=json.loads(json.dumps(image.config_dict())),
            image_preprocessing=json.loads(json.dumps(image.preprocessing.to_dict())),
        )
    model_cls = NERModel.registry[config.type]
    return model_cls(config, text_encoder=text, image_encoder=image)  # type: ignore[call-arg]


def build_collator(config: ModelConfig, tokenizer: Any) -> Processor:
    """Deprecated: the :class:`Processor` is the one name for what turns posts into batches;
    use :meth:`Processor.for_model`."""
    warnings.warn(
        "smner.model.build_collator is deprecated; use Processor.for_model(config, tokenizer)",
        DeprecationWarning,
        stacklevel=2,
    )
    return Processor.for_model(config, tokenizer)


__all__ = [
    "SMNER",
    "BIOTagger",
    "ModelOutput",
    "NERModel",
    "PredictedEntity",
    "build_collator",
    "build_model",
]
