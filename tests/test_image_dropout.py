"""Modality dropout (model.image_dropout): in training, a share of the posts is read as posts
without a picture; prediction never drops."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smner.config.check import ConfigError
from smner.data.images import ImageStatus
from smner.model import build_model
from tests.test_weak_alignment import make_posts
from tests.tiny import posts_batch, tiny_config


def test_a_dropped_post_trains_as_the_same_post_without_its_picture(
    encoders: tuple[Path, Path],
) -> None:
    text, image = encoders
    torch.manual_seed(0)
    config = tiny_config(
        text,
        image,
        image_dropout=0.999999,
        entity_competition=1.0,
        region_types=1.0,
        region_attention=1.0,
        max_span_width=1,
    )
    model = build_model(config)
    posts = make_posts(6, seed=7)
    with_pictures = posts_batch(model, text, posts, ImageStatus.OK)
    without = posts_batch(model, text, posts, ImageStatus.NO_IMAGE)
    model.train()  # the tiny config has no dropout: training differs only by the image dropout
    dropped = model(with_pictures, labels=with_pictures.span_labels)
    plain = model(without, labels=without.span_labels)
    torch.testing.assert_close(dropped.logits, plain.logits)
    torch.testing.assert_close(dropped.losses["span_ce"], plain.losses["span_ce"])
    assert "region_types" not in dropped.losses  # no picture seen, nothing to localise
    assert float(dropped.losses["competition"]) == 0.0
    model.eval()
    with torch.no_grad():
        seen = model(with_pictures).logits
    assert not torch.allclose(seen, plain.logits.detach())  # prediction never drops


def test_image_dropout_is_refused_with_the_box_head(encoders: tuple[Path, Path]) -> None:
    with pytest.raises(ConfigError, match="image_dropout"):
        tiny_config(*encoders, image_dropout=0.3, grounding=True)


def test_the_text_side_loss_is_the_loss_of_the_post_read_without_its_picture(
    encoders: tuple[Path, Path],
) -> None:
    text, image = encoders
    torch.manual_seed(0)
    model = build_model(tiny_config(text, image, text_side_loss=0.5, max_span_width=1))
    posts = make_posts(6, seed=8)
    with_pictures = posts_batch(model, text, posts, ImageStatus.OK)
    without = posts_batch(model, text, posts, ImageStatus.NO_IMAGE)
    model.train()
    seen = model(with_pictures, labels=with_pictures.span_labels)
    unseen = model(without, labels=without.span_labels)
    torch.testing.assert_close(seen.losses["text_side"], unseen.losses["span_ce"])
    parts = {k: v.detach() for k, v in seen.losses.items()}
    cfg = model.config
    expected = (
        parts["span_ce"]
        + 0.5 * parts["text_side"]
        - cfg.ib_alpha * parts["mi"]
        + cfg.ib_beta * parts["kl"]
    )
    torch.testing.assert_close(seen.loss.detach(), expected)
