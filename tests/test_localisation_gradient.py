"""How much of the weak localisation loss reaches the text side
(``model.localisation_text_gradient``): the loss is the same, only where its gradient goes
changes."""

from __future__ import annotations

from pathlib import Path

import torch

from smner.model import build_model
from tests.test_weak_alignment import make_posts
from tests.tiny import posts_batch, tiny_config


def test_the_weights_alone_are_the_forward_s_weights(encoders: tuple[Path, Path]) -> None:
    torch.manual_seed(0)
    block = build_model(tiny_config(*encoders)).eval().cross_attention
    queries, tokens = torch.randn(2, 3, 32), torch.randn(2, 6, 32)
    ignore = torch.zeros(2, 6, dtype=torch.bool)
    ignore[0, 0] = ignore[1, 4:] = True
    offsets = torch.randn(2, 3, 32), torch.randn(1, 6, 32)
    with torch.no_grad():
        _, weights = block(queries, tokens, ignore, *offsets)
        alone = block.weights(queries, tokens, ignore, *offsets)
    torch.testing.assert_close(alone, weights, atol=1e-6, rtol=1e-5)


def _localisation_gradients(encoders: tuple[Path, Path], share: float) -> tuple[float, dict]:
    text, image = encoders
    torch.manual_seed(0)
    config = tiny_config(
        text,
        image,
        region_types=1.0,
        region_attention=1.0,
        localisation_text_gradient=share,
        max_span_width=1,
    )
    model = build_model(config)
    batch = posts_batch(model, text, make_posts(6, seed=5))
    model.train()
    loss = model(batch, labels=batch.span_labels).losses["region_attention"]
    loss.backward()
    grads = {
        name: param.grad.detach().clone()
        for name, param in model.named_parameters()
        if param.grad is not None
    }
    return float(loss.detach()), grads


def test_the_text_side_gets_its_share_of_the_localisation_gradient(
    encoders: tuple[Path, Path],
) -> None:
    full_loss, full = _localisation_gradients(encoders, 1.0)
    half_loss, half = _localisation_gradients(encoders, 0.5)
    none_loss, none = _localisation_gradients(encoders, 0.0)
    assert full_loss == half_loss == none_loss > 0  # the same loss, whatever the share
    text_side = [n for n in full if n.startswith(("text.", "span_representation."))]
    assert text_side and all(float(full[n].abs().sum()) > 0 for n in text_side)
    for name in text_side:
        torch.testing.assert_close(half[name], 0.5 * full[name], atol=1e-7, rtol=1e-4)
        assert name not in none or float(none[name].abs().sum()) == 0.0
    # the alignment itself still learns from it: the block's projections and the regions
    for name in ["cross_attention.attention.in_proj_weight", "image_regions.weight"]:
        assert float(full[name].abs().sum()) > 0
        torch.testing.assert_close(none[name], full[name], atol=1e-7, rtol=1e-4)
