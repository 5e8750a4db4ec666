"""The gated bottleneck (model.ib_gate): the critic's agreement decides how much of the image
path a post keeps; shut, the post reads as a post without a picture; open, as the paper's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smner.config.check import ConfigError
from smner.config.model import ADDED_AFTER_RELEASE
from smner.data.images import ImageStatus
from smner.model import build_model
from smner.model.visual_tokens import gated
from tests.test_weak_alignment import make_posts
from tests.tiny import posts_batch, tiny_config


def test_gated_mixes_each_post_between_its_image_path_and_the_fill() -> None:
    path, fill = torch.ones(2, 3, 4), torch.zeros(2, 1, 4)
    out = gated(path, fill, torch.tensor([0.25, 1.0]))
    torch.testing.assert_close(out[0], torch.full((3, 4), 0.25))
    torch.testing.assert_close(out[1], torch.ones(3, 4))


@pytest.mark.parametrize("cross_attention", [True, False])
@pytest.mark.parametrize("visual_context", ["context", "block"])
def test_a_shut_gate_reads_the_post_as_one_without_a_picture(
    encoders: tuple[Path, Path], cross_attention: bool, visual_context: str
) -> None:
    text, image = encoders
    torch.manual_seed(0)
    config = tiny_config(
        text,
        image,
        ib_gate=True,
        use_cross_attention=cross_attention,
        visual_context=visual_context,
        max_span_width=2,
    )
    model = build_model(config).eval()
    with torch.no_grad():
        model.bottleneck.gate.net[2].bias.fill_(-1e4)
    posts = make_posts(4, seed=5)
    with torch.no_grad():
        shut = model(posts_batch(model, text, posts, ImageStatus.OK)).logits
        without = model(posts_batch(model, text, posts, ImageStatus.NO_IMAGE)).logits
        model.bottleneck.gate.net[2].bias.fill_(0.0)
        half_open = model(posts_batch(model, text, posts, ImageStatus.OK)).logits
    torch.testing.assert_close(shut, without, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(half_open, without, atol=1e-3)


def test_a_wide_open_gate_is_the_paper_s_bottleneck(encoders: tuple[Path, Path]) -> None:
    text, image = encoders
    torch.manual_seed(0)
    gate = build_model(tiny_config(text, image, ib_gate=True, max_span_width=2)).eval()
    paper = build_model(tiny_config(text, image, max_span_width=2)).eval()
    missing = paper.load_state_dict(gate.state_dict(), strict=False)
    assert missing.unexpected_keys and all(
        k.startswith("bottleneck.gate.") for k in missing.unexpected_keys
    )
    assert not hasattr(paper.bottleneck, "gate")
    with torch.no_grad():
        gate.bottleneck.gate.net[2].bias.fill_(1e4)
    batch = posts_batch(gate, text, make_posts(4, seed=6), ImageStatus.OK)
    with torch.no_grad():
        torch.testing.assert_close(gate(batch).logits, paper(batch).logits)


def test_the_gate_needs_the_bottleneck_and_old_folders_load_without_it(
    encoders: tuple[Path, Path],
) -> None:
    with pytest.raises(ConfigError, match="ib_gate"):
        tiny_config(*encoders, ib_gate=True, use_ib=False)
    assert ADDED_AFTER_RELEASE["ib_gate"] is False
