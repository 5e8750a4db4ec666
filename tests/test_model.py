from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from smner.errors import SmnerError
from smner.evaluation.metrics import score_entities
from smner.model.alignment import gaussian_kl, jensen_shannon_mi
from smner.model.base import NERModel
from smner.model.span_losses import span_loss
from smner.saved.folder import load_config
from tests.benchmark_fixture import Benchmark
from tests.tiny import fixture_batch, fixture_posts, tiny_model, train_steps

# Eval determinism, masked image slots, save/load, gradients and learning of every model type
# and ablation: tests/test_model_contract.py. Here: what is particular to SMNER.


def test_output_shapes_and_loss_parts(encoders: tuple[Path, Path]) -> None:
    model, collator = tiny_model(encoders)
    batch = fixture_batch(model, collator)
    out = model(batch, labels=batch.span_labels)
    num_spans = batch.spans.size(0)
    assert out.logits.shape == (4, num_spans, 4)
    assert out.attention is not None and out.attention.shape == (4, num_spans, 2 + 49)
    assert out.grid == (7, 7)
    assert set(out.losses) == {"span_ce", "mi", "kl"}
    assert out.loss is not None and torch.isfinite(out.loss)
    cfg = model.config
    expected = (
        out.losses["span_ce"] - cfg.ib_alpha * out.losses["mi"] + cfg.ib_beta * out.losses["kl"]
    )
    assert torch.allclose(out.loss, expected)
    assert model(batch).loss is None  # no labels, no loss
    weak, _ = tiny_model(encoders, region_types=1.0, region_attention=1.0)
    out = weak(batch, labels=batch.span_labels)
    assert {"region_types", "region_attention"} <= set(out.losses)
    assert torch.allclose(
        out.loss,
        out.losses["span_ce"]
        - cfg.ib_alpha * out.losses["mi"]
        + cfg.ib_beta * out.losses["kl"]
        + out.losses["region_types"]
        + out.losses["region_attention"],
    )


def test_loading_a_newer_format_fails_clearly(encoders: tuple[Path, Path], tmp_path: Path) -> None:
    model, _collator = tiny_model(encoders, use_image=False)
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(SmnerError, match="upgrade smner"):
        NERModel.from_pretrained(tmp_path / "m")
    path.write_text('{"format_version": 1, "model": {"bogus": 1}}')
    with pytest.raises(SmnerError, match="unknown key"):
        load_config(tmp_path / "m")
    with pytest.raises(SmnerError, match="not a saved smner model"):
        NERModel.from_pretrained(tmp_path)


def test_training_mode_samples_the_bottleneck(encoders: tuple[Path, Path]) -> None:
    model, collator = tiny_model(encoders)
    batch = fixture_batch(model, collator, labels=False)
    model.train()
    assert not torch.equal(model(batch).logits, model(batch).logits)


def test_closed_form_kl() -> None:
    torch.manual_seed(0)
    mu, sigma = torch.randn(3, 5), torch.rand(3, 5) + 0.5
    assert torch.allclose(gaussian_kl(mu, sigma, mu, sigma), torch.zeros(3), atol=1e-6)
    mu_q, sigma_q = torch.randn(5), torch.rand(5) + 0.5
    mu_p, sigma_p = torch.randn(5), torch.rand(5) + 0.5
    p = torch.distributions.Normal(mu_p, sigma_p)
    q = torch.distributions.Normal(mu_q, sigma_q)
    samples = p.sample((200_000,))
    monte_carlo = (p.log_prob(samples) - q.log_prob(samples)).sum(-1).mean()
    exact = gaussian_kl(mu_p, sigma_p, mu_q, sigma_q)
    assert exact.item() == pytest.approx(monte_carlo.item(), rel=0.03, abs=0.01)


def test_jensen_shannon_estimate_is_zero_at_chance_and_grows_with_separation() -> None:
    assert jensen_shannon_mi(torch.zeros(4, 4)).item() == pytest.approx(0.0, abs=1e-6)
    separated = torch.full((4, 4), -20.0).fill_diagonal_(20.0)
    assert jensen_shannon_mi(separated).item() == pytest.approx(math.log(4), abs=1e-6)


@pytest.mark.integration  # learns the fixture (150 optimizer steps)
def test_overfits_four_posts(encoders: tuple[Path, Path]) -> None:
    model, collator = tiny_model(encoders, train_text_encoder=True)
    batch = fixture_batch(model, collator)
    train_steps(model, batch, 150, lr=3e-3)
    predicted = model.predict(batch)
    gold = [ex.entities for ex, _ in fixture_posts()]
    scores = score_entities(gold, [[p.entity for p in post] for post in predicted])
    assert scores.f1 == 1.0
    with_image = [
        p
        for post, (_, img) in zip(predicted, fixture_posts(), strict=True)
        for p in post
        if img is not None
    ]
    assert all(p.attention is not None and p.attention.shape == (7, 7) for p in with_image)
    total = [float(p.attention.sum()) + p.global_attention for p in with_image]  # type: ignore[union-attr,operator]
    assert total == pytest.approx([1.0] * len(with_image), abs=1e-5)
    no_image = [p for p in predicted[2]]
    assert no_image and all(p.attention is None for p in no_image)


def test_config_refuses_bad_values() -> None:
    from smner.config.check import ConfigError
    from smner.config.model import ModelConfig

    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(hidden_size=30, attention_heads=4)
    with pytest.raises(ConfigError, match="'O' is implicit"):
        ModelConfig(labels=["O", "PER"])
    assert replace(ModelConfig(), labels=["PER"]).id_to_label == ["O", "PER"]


def test_default_span_width_covers_the_benchmarks(benchmark_data: Benchmark) -> None:
    """The default width limit covers at least 99.8% of the training entities of both sets."""
    from smner.config.model import ModelConfig
    from smner.data.conll import read_conll

    width = ModelConfig().max_span_width
    for name in ("twitter2015", "twitter2017"):
        lengths = [
            e.length
            for ex in read_conll(benchmark_data.root / name / "train.txt")
            for e in ex.entities
        ]
        assert sum(n <= width for n in lengths) / len(lengths) >= 0.998, name


def test_span_representation_equals_projecting_each_concatenated_span() -> None:
    """The per-token factorisation computes exactly Linear([h_i ; h_j ; width ; shape])."""
    import torch.nn.functional as F

    from smner.data.spans import enumerate_spans
    from smner.model.span_representation import SpanRepresentation

    torch.manual_seed(0)
    module = SpanRepresentation(16, 8, 3, 4, 5, 11, 0.0)
    words, shape_ids = torch.randn(2, 6, 16), torch.randint(0, 11, (2, 6))
    spans = torch.from_numpy(enumerate_spans(6, 3))
    s, e = spans[:, 0], spans[:, 1]
    prefix = F.pad(module.shape(shape_ids).cumsum(1), (0, 0, 1, 0))
    concatenated = torch.cat(
        [
            words[:, s],
            words[:, e - 1],
            module.width(e - s).expand(2, -1, -1),
            prefix[:, e] - prefix[:, s],
        ],
        dim=-1,
    )
    expected = module.project(concatenated)
    assert torch.allclose(module(words, shape_ids, spans), expected, atol=1e-6)


@pytest.mark.integration  # learns (30 optimizer steps)
def test_attention_supervision_moves_the_attention_into_the_box(
    encoders: tuple[Path, Path],
) -> None:
    """Trained on the attention loss alone, a boxed entity's span learns to look inside its box
    (the top-left quarter of the grid), and the loss is reported as its own part."""
    from smner.evaluation.pointing import cell_coverage

    model, collator = tiny_model(encoders, region_positions=True)
    posts = fixture_posts()
    crop = model.image.preprocessing.crop_box(64, 64)
    target = cell_coverage([(0, 0, 32, 32)], crop, model.image.output_grid())
    assert target is not None
    targets = [{ex.entities[0]: target} if img is not None else None for ex, img in posts]
    batch = fixture_batch(model, collator, attention_targets=targets)
    assert batch.attention_target_index is not None
    assert batch.attention_target_index.shape == (3, 2)  # the post without image has none
    inside = torch.from_numpy(target > 0)

    def mass_in_box() -> float:
        model.eval()
        with torch.no_grad():
            attention = model(batch).attention
        posts_, spans_ = batch.attention_target_index.unbind(1)
        regions = attention[posts_, spans_, 2:]
        return float((regions[:, inside].sum(-1) / regions.sum(-1)).mean())

    before = mass_in_box()
    attention_loss = lambda output: output.losses["attention"]  # noqa: E731
    train_steps(model, batch, 30, lr=1e-2, objective=attention_loss, optimizer=torch.optim.Adam)
    assert before < 0.5 and mass_in_box() > 0.9, (before, mass_in_box())


@pytest.mark.integration  # trains EfficientNet-Lite0 fine regions
def test_a_fine_region_grid_trains_saves_and_loads(
    encoders: tuple[Path, Path], tmp_path: Path
) -> None:
    model, collator = tiny_model(encoders, image_encoder="efficientnet-lite0", image_regions="fine")
    assert model.attention_grid == (14, 14)
    batch = fixture_batch(model, collator)
    train_steps(model, batch, steps=2, lr=1e-3)
    model.eval()
    with torch.no_grad():
        before = model(batch)
    assert before.attention is not None and before.attention.shape[-1] == 2 + 14 * 14
    model.save_pretrained(tmp_path / "m")
    loaded = NERModel.from_pretrained(tmp_path / "m")
    assert loaded.config.image_regions == "fine" and loaded.attention_grid == (14, 14)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).logits, before.logits)
    with pytest.raises(SmnerError, match="EfficientNet-Lite"):
        tiny_model(encoders, image_regions="fine")  # the tiny encoder is a Hugging Face ResNet


def test_label_smoothing_spreads_the_span_target(encoders: tuple[Path, Path]) -> None:
    model, collator = tiny_model(encoders, label_smoothing=0.2, use_image=False)
    batch = fixture_batch(model, collator)
    labels = model.labels_of(batch)
    assert labels is not None
    logits = torch.randn(batch.size, batch.spans.shape[0], len(model.config.id_to_label))
    log_p = logits.log_softmax(-1)
    # (1 - e) * NLL of the gold class + e * the mean NLL over all classes, per span
    smoothed = -(0.8 * log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1) + 0.2 * log_p.mean(-1))
    weights = torch.where(labels > 0, 1.0, 0.5) * batch.span_mask
    expected = ((smoothed * weights).sum(1) / weights.sum(1)).mean()
    torch.testing.assert_close(span_loss(model.config, logits, labels, batch.span_mask), expected)
    model.config = replace(model.config, label_smoothing=0.0)
    nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    plain = ((nll * weights).sum(1) / weights.sum(1)).mean()
    torch.testing.assert_close(span_loss(model.config, logits, labels, batch.span_mask), plain)
