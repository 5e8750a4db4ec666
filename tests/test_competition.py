"""Entities competing for the picture (smner.model.competition): the shared-out weights, the
competitive pass against the ordinary one, and where the model uses it."""

from __future__ import annotations

from pathlib import Path

import torch

from smner.model import build_model
from smner.model.competition import groups_from_labels, groups_from_logits, members, shared_out
from tests.test_weak_alignment import make_posts
from tests.tiny import posts_batch, tiny_config


def test_a_cue_two_names_want_goes_to_the_one_that_claims_it_most() -> None:
    """Both names look hardest at key 0; the second claims it more, so the first moves to its
    next choice (key 1), which no one else wants. Ordinary attention leaves both on key 0."""
    scores = torch.tensor([[[[5.0, 3.0, 0.0], [8.0, 0.0, 0.0]]]])  # [B, H, G, N]
    weights = scores.softmax(-1)
    assert weights[0, 0, :, 0].min() > 0.8  # both on key 0 without competition
    valid = torch.tensor([[True, True]])
    shared = shared_out(scores, weights, valid, temperature=1.0)
    assert int(shared[0, 0, 0].argmax()) == 1
    assert int(shared[0, 0, 1].argmax()) == 0
    torch.testing.assert_close(shared.sum(-1), torch.ones(1, 1, 2))


def test_a_lone_member_and_padding_keep_the_ordinary_weights() -> None:
    scores = torch.randn(2, 2, 3, 5)
    weights = scores.softmax(-1)
    valid = torch.tensor([[True, False, False], [True, True, False]])
    shared = shared_out(scores, weights, valid, temperature=1.0)
    torch.testing.assert_close(shared[0, :, 0], weights[0, :, 0])  # alone: nothing to share
    assert not torch.allclose(shared[1, :, 0], weights[1, :, 0])  # two members share


def test_ignored_keys_get_no_weight_and_no_nan() -> None:
    scores = torch.randn(1, 1, 2, 4)
    scores[..., 0] = float("-inf")
    shared = shared_out(scores, scores.softmax(-1), torch.tensor([[True, True]]), 0.5)
    assert torch.isfinite(shared).all()
    assert float(shared[..., 0].abs().max()) == 0.0


def test_groups_are_the_entities_of_posts_that_name_two_or_more() -> None:
    labels = torch.tensor([[0, 2, 0, 1], [0, 3, 0, 0], [1, 0, 0, 1]])
    mask = torch.tensor([[True] * 4, [True] * 4, [True, True, True, False]])
    group = groups_from_labels(labels, mask)
    assert group.tolist() == [
        [False, True, False, True],
        [False, False, False, False],  # one entity: nothing to compete for
        [False, False, False, False],  # its second entity is padding
    ]
    index, valid = members(group)
    assert index[0].tolist() == [1, 3] and valid[0].tolist() == [True, True]
    assert valid[1].tolist() == [False, False] and index[1].tolist() == [4, 4]  # past the end


def test_prediction_groups_are_the_decoded_non_overlapping_entities() -> None:
    spans = torch.tensor([[0, 1], [0, 2], [2, 3], [3, 4]])
    logits = torch.full((1, 4, 3), -5.0)
    logits[0, :, 0] = 5.0  # every span "O" ...
    logits[0, 0] = torch.tensor([0.0, 3.0, 0.0])  # ... but (0, 1), overlapped by a surer (0, 2)
    logits[0, 1] = torch.tensor([0.0, 6.0, 0.0])
    logits[0, 3] = torch.tensor([0.0, 0.0, 4.0])
    group = groups_from_logits(logits, spans, torch.ones(1, 4, dtype=torch.bool))
    assert group.tolist() == [[False, True, False, True]]
    logits[0, 3, 0] = 9.0  # a single entity left: no group
    assert not groups_from_logits(logits, spans, torch.ones(1, 4, dtype=torch.bool)).any()


def test_the_competitive_pass_with_one_member_is_the_ordinary_block(
    encoders: tuple[Path, Path],
) -> None:
    """The hand-written pass uses the block's own weights: one member reads exactly as the
    ordinary attention, so the competition is all that differs."""
    torch.manual_seed(0)
    model = build_model(tiny_config(*encoders, entity_competition=1.0)).eval()
    block = model.cross_attention
    queries, tokens = torch.randn(2, 3, 32), torch.randn(2, 6, 32)
    ignore = torch.zeros(2, 6, dtype=torch.bool)
    ignore[:, 0] = True
    offsets = torch.randn(2, 3, 32), torch.randn(1, 6, 32)
    ordinary, weights = block(queries, tokens, ignore, *offsets)
    alone = torch.tensor([[True, False, False], [True, False, False]])
    with torch.no_grad():
        competed, competed_weights = block.compete(queries, tokens, ignore, alone, 1.0, *offsets)
    torch.testing.assert_close(competed[:, 0], ordinary[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(competed_weights[:, 0], weights[:, 0], atol=1e-6, rtol=1e-5)


def test_the_model_changes_only_the_entities_of_posts_that_name_two(
    encoders: tuple[Path, Path],
) -> None:
    text, image = encoders
    torch.manual_seed(0)
    plain = build_model(tiny_config(text, image, max_span_width=1)).eval()
    competing = build_model(tiny_config(text, image, max_span_width=1, entity_competition=1.0))
    competing.load_state_dict(plain.state_dict())
    competing.eval()
    batch = posts_batch(plain, text, make_posts(6, seed=3))
    with torch.no_grad():
        before, after = plain(batch), competing(batch)
    group = groups_from_logits(before.logits, batch.spans, batch.span_mask)
    assert group.any(), "the untrained model should predict two entities somewhere"
    torch.testing.assert_close(after.logits[~group], before.logits[~group])
    torch.testing.assert_close(after.attention[~group], before.attention[~group])
    assert not torch.allclose(after.attention[group], before.attention[group])


def test_training_adds_the_competitive_cross_entropy_with_its_gradient(
    encoders: tuple[Path, Path],
) -> None:
    text, image = encoders
    torch.manual_seed(0)
    model = build_model(tiny_config(text, image, max_span_width=1, entity_competition=1.0))
    batch = posts_batch(model, text, make_posts(6, seed=4))  # two thirds name two entities
    model.train()
    output = model(batch, labels=batch.span_labels)
    assert output.losses["competition"].item() > 0
    output.losses["competition"].backward()
    grad = model.cross_attention.attention.in_proj_weight.grad
    assert grad is not None and float(grad.abs().sum()) > 0
