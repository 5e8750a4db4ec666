"""Span pruning at prediction (``model.span_pruning``): the kept spans get exactly the logits,
attention and boxes of the full path, pruned spans are non-entities, posts without an image are
unchanged, and training never prunes."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from smner.config.model import SMNERConfig
from smner.model.span_pruning import top_spans
from tests.tiny import fixture_batch, fixture_posts, tiny_model, train_steps


def _outputs(encoders, keep: int, **overrides):
    model, processor = tiny_model(encoders, **overrides)
    batch = fixture_batch(model, processor, labels=True)
    train_steps(model, batch, steps=30, lr=3e-3)  # a model with opinions about its spans
    model.eval()
    with torch.no_grad():
        full = model(batch)
        model.config = dataclasses.replace(model.config, span_pruning=keep)
        pruned = model(batch)
    return model, batch, full, pruned


@pytest.mark.parametrize("grounding", [False, True])
def test_kept_spans_are_the_full_paths_and_the_rest_are_not_entities(encoders, grounding):
    keep = 5
    model, batch, full, pruned = _outputs(encoders, keep, grounding=grounding)
    kept = top_spans(pruned.logits, batch.span_mask, keep)
    with_image = batch.has_image.nonzero().flatten().tolist()
    without = (~batch.has_image).nonzero().flatten().tolist()
    assert with_image and without  # the fixture has both kinds of post
    for b in with_image:
        rows = kept[b]
        assert torch.allclose(pruned.logits[b, rows], full.logits[b, rows], atol=1e-5)
        assert torch.allclose(pruned.attention[b, rows], full.attention[b, rows], atol=1e-6)
        others = torch.ones(batch.spans.size(0), dtype=torch.bool)
        others[rows] = False
        assert bool((pruned.logits[b, others].argmax(-1) == 0).all())
        if grounding:
            got, want = pruned.grounding, full.grounding
            assert torch.allclose(got.box[b, rows], want.box[b, rows], atol=1e-5)
            assert torch.allclose(
                got.in_image_logit[b, rows], want.in_image_logit[b, rows], atol=1e-5
            )
    for b in without:  # no image: the text-side logits are what the full path computes
        assert torch.allclose(pruned.logits[b], full.logits[b], atol=1e-5)
    # the kept spans are the ones the text finds likely: every gold entity of the fixture
    posts = fixture_posts()
    decoded_full = model.decode(batch, full)
    decoded_pruned = model.decode(batch, pruned)
    for b in range(batch.size):
        entities_full = {p.entity for p in decoded_full[b]}
        entities_pruned = {p.entity for p in decoded_pruned[b]}
        assert entities_pruned <= entities_full | set(posts[b][0].entities)
    assert sum(map(len, decoded_pruned)) > 0


def test_a_kept_spans_ranking_is_by_the_chance_of_being_an_entity() -> None:
    logits = torch.tensor([[[5.0, 0.0], [0.0, 5.0], [0.0, 2.0], [0.0, 9.0]]])
    mask = torch.tensor([[True, True, True, False]])  # the last span is padding
    assert top_spans(logits, mask, 2).tolist() == [[1, 2]]


def test_training_and_block_models_never_prune(encoders) -> None:
    model, processor = tiny_model(encoders, span_pruning=2)
    batch = fixture_batch(model, processor, labels=True)
    model.train()
    output = model(batch, labels=model.labels_of(batch))
    assert output.loss is not None and "span_ce" in output.losses
    model.eval()
    assert model._spans_kept(batch.spans.size(0), labels=None) == 2
    assert model._spans_kept(batch.spans.size(0), labels=model.labels_of(batch)) == 0
    assert model._spans_kept(2, labels=None) == 0  # nothing to prune
    block, _ = tiny_model(encoders, span_pruning=2, visual_context="block")
    assert block.eval()._spans_kept(batch.spans.size(0), labels=None) == 0


def test_folders_saved_before_the_setting_load_without_pruning() -> None:
    assert SMNERConfig(labels=["PER"]).span_pruning == 0


def test_the_predictor_and_evaluate_take_a_pruning_and_refuse_where_it_cannot_apply(
    tiny_model_dir, post_images, tmp_path, capsys
) -> None:
    from smner.cli import main
    from smner.errors import SmnerError
    from smner.predict.predictor import Predictor

    full = Predictor.from_pretrained(tiny_model_dir)
    pruned = Predictor.from_pretrained(tiny_model_dir, span_pruning=3)
    assert pruned.model.config.span_pruning == 3 and full.model.config.span_pruning == 0
    text = "George visited Paris today with Anna"
    with_image = pruned.predict(text, image=post_images / "0.jpg")
    assert len(with_image.entities) <= 3
    # without an image nothing changes
    assert pruned.predict(text).to_dict() == full.predict(text).to_dict()
    with pytest.raises(SmnerError, match="visual_context 'context'"):
        block = Predictor.from_pretrained(tiny_model_dir)
        block.model.config = dataclasses.replace(block.model.config, visual_context="block")
        from smner.model.span_pruning import set_span_pruning

        set_span_pruning(block.model, 3)
    data = tmp_path / "data.txt"
    data.write_text("IMGID:0\nGeorge\tB-PER\nvisited\tO\nParis\tB-LOC\n\n")
    argv = ["evaluate", "--model", str(tiny_model_dir), "--data", str(data), "--json"]
    scores = []
    for extra in (["--span-pruning", "1"], ["--span-pruning", "0"], []):
        assert main([*argv, "--images", str(post_images), *extra]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[0]["predicted"] <= 1 and scores[1] == scores[2]


@pytest.mark.integration
def test_a_pruning_model_exports_a_graph_that_prunes_as_pytorch_does(encoders, tmp_path) -> None:
    """The graph keeps each image post's best span (``span_pruning=1``) and agrees with
    PyTorch pruning; ``--span-pruning 0`` exports every span."""
    pytest.importorskip("onnxruntime")
    from smner.cli import main
    from smner.predict.onnx_verify import CHECK_POSTS, pruned_rows, with_features
    from smner.predict.predictor import Predictor

    model, processor = tiny_model(encoders, span_pruning=1)
    batch = fixture_batch(model, processor, labels=True)
    train_steps(model, batch, steps=30, lr=3e-3)
    model.eval()
    model.save_pretrained(tmp_path / "model", processor=processor)
    for keep in (None, 0):
        out = tmp_path / f"onnx-{keep}"
        argv = ["export", "--model", str(tmp_path / "model"), "--output", str(out)]
        assert main(argv + ([] if keep is None else ["--span-pruning", str(keep)])) == 0
        manifest = json.loads((out / "onnx.json").read_text())
        assert manifest["verification"]["passed"] and manifest["verification"]["entities_equal"]
        graph = Predictor.from_pretrained(out).model
        images = [True, False, True, False, True, True]
        posts = with_features(model, processor, list(CHECK_POSTS), images)
        with torch.no_grad():
            logits = graph(posts).logits
            expected = model(posts).logits if keep is None else None
        inside = posts.span_mask & posts.has_image[:, None]
        kept = (~pruned_rows(logits) & inside).sum(1)
        if keep is None:  # one span a post with an image, PyTorch's
            assert kept[posts.has_image].tolist() == [1] * sum(images)
            torch.testing.assert_close(logits[inside], expected[inside], atol=1e-4, rtol=1e-4)
            config = json.loads((out / "config.json").read_text())["model"]
            assert config["span_pruning"] == 1
        else:
            assert bool((kept[posts.has_image] == inside.sum(1)[posts.has_image]).all())
            assert json.loads((out / "config.json").read_text())["model"]["span_pruning"] == 0


def test_the_export_check_takes_ties_at_the_cut_as_pytorch_s_and_flags_other_swaps(
    encoders,
) -> None:
    """Which of two spans tied at the cut a runtime keeps is float noise; any other span kept
    where PyTorch pruned it is a fault of the graph."""
    from smner.predict.onnx_verify import Verification, _ties_as_pytorch, pruned_rows

    model, processor = tiny_model(encoders, span_pruning=1)
    batch = fixture_batch(model, processor, labels=True)
    train_steps(model, batch, steps=30, lr=3e-3)
    model.eval()
    with torch.no_grad():
        expected = model(batch)
    post = int(batch.has_image.nonzero()[0])
    kept = int((~pruned_rows(expected.logits[post : post + 1])[0]).nonzero()[0])
    inside = batch.span_mask[post].nonzero().flatten().tolist()
    other = next(s for s in inside if s != kept)
    logits = expected.logits.clone()  # the graph kept `other` instead of `kept`
    logits[post, [kept, other]] = expected.logits[post, [other, kept]]
    found = dataclasses.replace(expected, logits=logits)
    strict = Verification(tolerance=1e-6)
    with torch.no_grad():
        _ties_as_pytorch(model, batch, expected, found, strict)
    assert strict.problems and "not ties at the cut" in strict.problems[0]
    loose = Verification(tolerance=1.0)  # every score is within 1 of the cut
    with torch.no_grad():
        patched = _ties_as_pytorch(model, batch, expected, found, loose)
    assert not loose.problems and loose.pruning_ties == 2
    torch.testing.assert_close(patched.logits, expected.logits)
