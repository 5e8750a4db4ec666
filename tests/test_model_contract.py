"""What every model type promises, run for each registered type and each SMNER ablation.

A new model type or ablation joins by adding a row to ``CASES``; the first test fails until
every registered type has one. Each test builds its model fresh from the tiny encoders.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from smner.model.base import NERModel
from smner.processing.batching import Batch
from smner.processing.processor import Processor
from tests.tiny import fixture_batch, fixture_posts, tiny_model, train_steps

#: case name -> model config overrides (see tests.tiny.tiny_config)
CASES: dict[str, dict[str, object]] = {
    "smner": {},
    "smner-no-ib": {"use_ib": False},
    "smner-no-cross-attention": {"use_cross_attention": False},
    "smner-text-only": {"use_image": False},
    "smner-word-context": {"word_context_layers": 1},
    "smner-grounding": {"grounding": True},
    "smner-trained-image-encoder": {"train_image_encoder": True},
    "bio-softmax": {"type": "bio-tagger", "tagger_head": "softmax", "use_image": False},
    "bio-crf": {"type": "bio-tagger", "tagger_head": "crf", "use_image": False},
    "bio-softmax-image": {"type": "bio-tagger", "tagger_head": "softmax"},
    "bio-crf-image": {"type": "bio-tagger", "tagger_head": "crf"},
}

#: the post of the fixture without an image
NO_IMAGE = next(i for i, (_, image) in enumerate(fixture_posts()) if image is None)


def batch_for(model: NERModel, collator: object, labels: bool = True) -> Batch:
    """The fixture batch; a grounding model also gets its boxes (the first entity of each post
    with an image is in the top-left quarter), as its head learns only from boxes."""
    boxes = None
    if model.grounds:
        boxes = [
            {ex.entities[0]: [(0.0, 0.0, 0.5, 0.5)]} if image is not None else None
            for ex, image in fixture_posts()
        ]
    return fixture_batch(model, collator, labels, box_targets=boxes)  # type: ignore[arg-type]


def loss(model: NERModel, batch: Batch) -> torch.Tensor:
    output = model(batch, labels=model.labels_of(batch))
    assert output.loss is not None and torch.isfinite(output.loss)
    return output.loss


@pytest.fixture(params=sorted(CASES))
def built(request: pytest.FixtureRequest, encoders: tuple[Path, Path]) -> tuple[NERModel, object]:
    return tiny_model(encoders, **CASES[request.param])


def test_every_registered_model_type_has_a_case() -> None:
    covered = {str(overrides.get("type", "smner")) for overrides in CASES.values()}
    assert covered == set(NERModel.registry)


def test_eval_mode_is_deterministic(built: tuple[NERModel, object]) -> None:
    model, collator = built
    model.eval()
    batch = batch_for(model, collator, labels=False)
    with torch.no_grad():
        assert torch.equal(model(batch).logits, model(batch).logits)


def test_a_post_without_an_image_ignores_its_masked_slots(built: tuple[NERModel, object]) -> None:
    """Whatever sits in the image slots of a post without an image (noise, NaN) changes
    nothing, neither the logits nor a gradient (masking by selection, not by multiplying),
    while a post with an image does depend on it."""
    model, collator = built
    encoder = model.image_encoder
    if encoder is None:
        pytest.skip("a text-only model has no image slots")
    model.eval()
    batch = batch_for(model, collator)
    assert not batch.has_image[NO_IMAGE]
    with torch.no_grad():
        features = encoder(batch.pixel_values)
    batch.pixel_values = None
    batch.image_pooled, batch.image_regions = features.pooled, features.regions
    with torch.no_grad():
        reference = model(batch).logits
    batch.image_pooled[NO_IMAGE] = float("nan")
    batch.image_regions[NO_IMAGE] = float("nan")
    loss(model, batch).backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name
    with torch.no_grad():
        changed = model(batch).logits
        assert torch.isfinite(changed).all()
        assert torch.equal(changed, reference)
        batch.image_pooled[0] = torch.randn_like(batch.image_pooled[0])
        batch.image_regions[0] = torch.randn_like(batch.image_regions[0])
        assert not torch.equal(model(batch).logits[0], reference[0])


def test_save_then_load_gives_identical_logits(
    built: tuple[NERModel, object], tmp_path: Path
) -> None:
    model, collator = built
    model.eval()
    batch = batch_for(model, collator, labels=False)
    model.save_pretrained(tmp_path / "saved", processor=collator)
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {
        "README.md",
        "config.json",
        "model.safetensors",
        "processor.json",
        "tokenizer",
    }
    loaded = NERModel.from_pretrained(tmp_path / "saved")
    assert type(loaded) is type(model) and loaded.config == model.config
    processor = Processor.from_pretrained(tmp_path / "saved")
    assert processor.to_dict() == collator.to_dict()  # type: ignore[attr-defined]
    again = batch_for(loaded, processor, labels=False)
    assert all(torch.equal(getattr(again, k), getattr(batch, k)) for k in ("input_ids", "spans"))
    with torch.no_grad():
        assert torch.equal(loaded(again).logits, model(batch).logits)


def test_every_trainable_parameter_gets_a_finite_nonzero_gradient(
    built: tuple[NERModel, object],
) -> None:
    """Within a few steps: a layer initialised to zero (the grounding head's last) passes no
    gradient back on the first step, and does once it has moved."""
    model, collator = built
    batch = batch_for(model, collator)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    optimizer = torch.optim.AdamW(trainable.values(), lr=3e-3)
    model.train()
    silent = set(trainable)
    for _ in range(3):
        optimizer.zero_grad()
        loss(model, batch).backward()
        for name, p in trainable.items():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            if p.grad.abs().sum() > 0:
                silent.discard(name)
        optimizer.step()
    if batch.image_slots == 1:
        # the image-slot tags are relative to the first image's: they learn from posts of
        # several images only (tests/test_multi_image.py trains them)
        silent.discard("image_slots.weight")
    assert not silent
    assert (model.image_encoder is None) == (not model.config.use_image)
    if model.image_encoder is not None and not model.config.train_image_encoder:
        assert not any(p.requires_grad for p in model.image_encoder.parameters())


def test_the_loss_goes_down_when_overfitting_the_fixture(built: tuple[NERModel, object]) -> None:
    model, collator = built
    batch = batch_for(model, collator)
    model.eval()
    with torch.no_grad():
        before = float(loss(model, batch))
    train_steps(model, batch, 5, lr=3e-3)
    model.eval()
    with torch.no_grad():
        after = float(loss(model, batch))
    assert after < before, (before, after)
