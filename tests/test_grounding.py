"""Grounded NER: the metrics against hand-worked examples, the head's box arithmetic, that the
head learns boxes and presence, the generated corpus's ungroundable entities, and the path from
training with boxes to predictions and scores that carry them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from smner.config.check import ConfigError, from_dict
from smner.config.model import ModelConfig
from smner.data.boxes import box_to_crop, box_to_pixels, read_voc
from smner.data.types import Entity
from smner.encoders.preprocessing import ImagePreprocessing
from smner.errors import SmnerWarning
from smner.evaluation.grounding import GroundingScorer, box_iou, format_grounding, region_right
from smner.model.grounding import attention_anchor, generalized_iou
from smner.synth.corpus import build_posts, generate_corpus
from smner.synth.text import TYPE_HINTS
from tests.tiny import fixture_batch, fixture_posts, tiny_model, train_steps

# --- metrics -------------------------------------------------------------------------------


def test_box_iou_by_hand() -> None:
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share no area
    # overlap 5 x 10 = 50; union 100 + 100 - 50 = 150
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    # a box inside another: 4 / 100
    assert box_iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(0.04)
    assert box_iou((0, 0, 0, 10), (0, 0, 0, 10)) == 0.0  # no area


def test_region_right_and_the_none_cases() -> None:
    gold = [(0, 0, 10, 10), (50, 50, 60, 60)]
    assert region_right((1, 1, 10, 10), gold)  # IoU 0.81 with the first
    assert region_right((50, 50, 59, 61), gold)  # matches the second of several boxes
    assert not region_right((0, 0, 10, 20), gold)  # IoU exactly 0.5 is not above it
    assert not region_right(None, gold)  # says "not there" for an entity that is
    assert region_right(None, [])  # says "not there" for an entity that is not
    assert not region_right((0, 0, 10, 10), [])  # a box for an entity not in the image


def test_gmner_mner_eeg_by_hand() -> None:
    """Two posts worked out on paper.

    Post 1: gold A (PER, box), B (LOC, no box). Predicted: A right type + right box; B right
    type, says "not there". All three metrics: 2 correct.
    Post 2: gold C (ORG, box), D (MISC, box). Predicted: C with the wrong type but the right
    box; D right type, wrong box; E (not gold) with no box.
    GMNER: 2 of 5 predicted, 2 of 4 gold. MNER: A, B, D = 3. EEG: A, B, C = 3 (the type does
    not matter, the region does).
    """
    scorer = GroundingScorer()
    a, b = Entity(0, 1, "PER"), Entity(3, 5, "LOC")
    scorer.update([a, b], {a: [(0, 0, 10, 10)]}, [(a, (0, 0, 9, 10)), (b, None)])
    c, d = Entity(0, 2, "ORG"), Entity(4, 5, "MISC")
    e = Entity(6, 7, "PER")
    scorer.update(
        [c, d],
        {c: [(0, 0, 100, 100)], d: [(100, 0, 200, 100)]},
        [(Entity(0, 2, "PER"), (0, 0, 100, 90)), (d, (0, 0, 100, 100)), (e, None)],
    )
    result = scorer.result()
    assert (result.gmner["correct"], result.gmner["predicted"], result.gmner["gold"]) == (2, 5, 4)
    assert result.mner["correct"] == 3 and result.eeg["correct"] == 3
    assert result.gmner["precision"] == pytest.approx(2 / 5)
    assert result.gmner["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert result.eeg["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert result.groundable == 3 and result.entities == 4
    assert "GMNER" in format_grounding(result) and "3 of 4" in format_grounding(result)


def test_boxes_map_through_the_centre_crop_of_a_non_square_image() -> None:
    """A 400 x 200 image: the short side goes to 256 (x1.28, so 512 x 256), the centre 224
    square (144..368, 16..240) is kept, which is pixels (112.5, 12.5) to (287.5, 187.5) of
    the original: 175 pixels a side."""
    preprocessing = ImagePreprocessing(size=224, resize=256)
    crop = preprocessing.crop_box(400, 200)
    assert crop == pytest.approx((112.5, 12.5, 287.5, 187.5))
    # the crop's middle quarter
    assert box_to_pixels((0.25, 0.25, 0.75, 0.75), crop, (400, 200)) == pytest.approx(
        (156.25, 56.25, 243.75, 143.75)
    )
    # past the crop: kept as far as the image goes, then clipped to it
    assert box_to_pixels((-1.0, -1.0, 2.0, 0.5), crop, (400, 200)) == pytest.approx(
        (0.0, 0.0, 400.0, 100.0)
    )
    box = (10.0, 20.0, 300.0, 190.0)
    assert box_to_pixels(box_to_crop(box, crop), crop, (400, 200)) == pytest.approx(box)


# --- the head ------------------------------------------------------------------------------


def test_attention_anchor_recovers_a_uniform_block_of_cells() -> None:
    """Attention spread evenly over columns 1-3 and rows 2-3 of a 7 x 7 grid is the box
    (1/7, 2/7) to (4/7, 4/7): centre (2.5/7, 3/7), size (3/7, 2/7)."""
    grid = torch.zeros(7, 7)
    grid[2:4, 1:4] = 1.0
    cx, cy, w, h = attention_anchor(grid.flatten(), (7, 7)).tolist()
    assert (cx, cy) == pytest.approx((2.5 / 7, 3 / 7))
    assert (w, h) == pytest.approx((3 / 7, 2 / 7))
    one = torch.zeros(7, 7)
    one[0, 6] = 5.0  # a single cell, unnormalised weights
    assert attention_anchor(one.flatten(), (7, 7)).tolist() == pytest.approx(
        [6.5 / 7, 0.5 / 7, 1 / 7, 1 / 7]
    )


def test_generalized_iou_by_hand() -> None:
    a = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert float(generalized_iou(a, a)) == pytest.approx(1.0)
    # disjoint unit boxes 1 apart: IoU 0, hull 3 x 1, union 2 -> -(3 - 2) / 3
    far = torch.tensor([2.0, 0.0, 3.0, 1.0])
    assert float(generalized_iou(a, far)) == pytest.approx(-1 / 3)
    half = torch.tensor([0.5, 0.0, 1.5, 1.0])  # IoU 1/3, hull = union
    assert float(generalized_iou(a, half)) == pytest.approx(1 / 3)


@pytest.mark.integration  # learns (60 optimizer steps)
def test_head_learns_presence_and_boxes(encoders: tuple[Path, Path]) -> None:
    """On the fixture posts, the first entity of each post with an image is in its top-left
    quarter and the second is not in the image; after a short training (the attention
    supervised as training does where boxes are given) the predictions say so, with boxes of
    IoU > 0.5, and the post without an image gets no box at all."""
    from smner.evaluation.pointing import cell_coverage

    model, collator = tiny_model(encoders, grounding=True)
    assert model.grounds
    posts = fixture_posts()
    quarter = (0.0, 0.0, 0.5, 0.5)
    targets = [
        {ex.entities[0]: [quarter], ex.entities[1]: []} if img is not None else None
        for ex, img in posts
    ]
    crop = model.image.preprocessing.crop_box(64, 64)
    side = crop[2] - crop[0]
    pixels = (crop[0], crop[1], crop[0] + side / 2, crop[1] + side / 2)  # the crop's quarter
    coverage = cell_coverage([pixels], crop, model.image.output_grid())
    looks = [{ex.entities[0]: coverage} if img is not None else None for ex, img in posts]
    batch = fixture_batch(model, collator, attention_targets=looks, box_targets=targets)
    assert batch.ground_index is not None and batch.ground_index.shape == (6, 2)
    assert batch.ground_in_image.tolist() == [1.0, 0.0] * 3
    train_steps(model, batch, 60, lr=3e-3, optimizer=torch.optim.Adam)
    predictions = model.predict(batch)
    assert "grounding" in model(batch, labels=batch.span_labels).losses
    for (example, image), post in zip(posts, predictions, strict=True):
        found = {p.entity: p for p in post}
        if image is None:
            assert all(p.in_image is None and p.box_in_crop is None for p in post)
            continue
        first, second = found[example.entities[0]], found[example.entities[1]]
        assert first.in_image > 0.75 and second.in_image < 0.25
        assert first.box_in_crop is not None and second.box_in_crop is None
        assert box_iou(first.box_in_crop, quarter) > 0.5


def test_grounding_needs_span_attention() -> None:
    with pytest.raises(TypeError, match="grounding"):
        ModelConfig(type="bio-tagger", grounding=True)  # a tagger's config has no such setting
    with pytest.warns(SmnerWarning, match="model.grounding: not a setting of a bio-tagger"):
        tagger = from_dict(ModelConfig, {"type": "bio-tagger", "grounding": True}, "model")
    assert not hasattr(tagger, "grounding")
    with pytest.raises(ConfigError, match="do not ground"):
        ModelConfig(use_cross_attention=False, grounding=True)
    assert not ModelConfig().grounding  # off by default: no cost where there are no boxes


# --- the generated corpus ------------------------------------------------------------------


def test_ungroundable_entities_are_left_out_and_named_in_the_text() -> None:
    posts = build_posts(400, seed=5, ungroundable=0.4)
    entities = [(post, i) for post in posts for i in range(len(post.entities))]
    drawn = {(post.index, cue.entity) for post in posts for cue in post.cues}
    left_out = [(post, i) for post, i in entities if (post.index, i) not in drawn]
    assert 0.3 < len(left_out) / len(entities) < 0.5
    hints = {kind: {tuple(h.split()) for h in words} for kind, words in TYPE_HINTS.items()}
    for post, i in entities:
        entity = post.entities[i]
        before = tuple(post.tokens[max(0, entity.start - 3) : entity.start])
        hinted = any(before[-len(h) :] == h for h in hints[entity.type])
        assert hinted == ((post, i) in left_out), (post.tokens, entity)
    for post in posts:
        assert 5 <= len(post.tokens) <= 25
        for cue in post.cues:  # the cues that are drawn still belong to their own entity
            assert cue.type == post.entities[cue.entity].type
    # no ungroundable entities: the corpus of earlier versions, same random draws
    assert [p.tokens for p in build_posts(100, seed=5)] == [
        p.tokens for p in build_posts(100, seed=5, ungroundable=0.0)
    ]


def test_box_files_and_meta_agree_on_what_is_in_the_image(tmp_path: Path) -> None:
    from smner.evaluation.pointing import load_entity_boxes

    summary = generate_corpus(tmp_path, posts=40, seed=2, ungroundable=0.5, image_size=64)
    assert summary.ungroundable > 0
    assert "entities not in their image" in summary.format()
    from smner.data.conll import read_conll

    examples = [
        ex for split in ("train", "valid", "test") for ex in read_conll(tmp_path / f"{split}.txt")
    ]
    from_meta = load_entity_boxes(tmp_path / "meta.jsonl", examples)
    from_voc = load_entity_boxes(tmp_path / "boxes", examples)
    assert {k: v for k, v in from_meta.items() if v} == {k: v for k, v in from_voc.items() if v}
    boxed = sum(len(v) for v in from_meta.values())
    total = sum(len(ex.entities) for ex in examples)
    assert boxed == total - summary.ungroundable  # no mismatched images here
    for path in (tmp_path / "boxes").glob("*.xml"):
        read_voc(path)  # every file is valid VOC


def test_synth_refuses_a_bad_share(tmp_path: Path) -> None:
    from smner.errors import SmnerError

    with pytest.raises(SmnerError, match="ungroundable"):
        generate_corpus(tmp_path, posts=40, ungroundable=1.5)


# --- end to end ----------------------------------------------------------------------------


def test_training_a_grounding_model_needs_boxes(
    encoders: tuple[Path, Path], tmp_path: Path
) -> None:
    from smner.config.check import from_dict
    from smner.config.experiment import ExperimentConfig
    from smner.errors import SmnerError
    from smner.training.trainer import Trainer
    from tests.tiny import tiny_model_keys

    corpus = tmp_path / "corpus"
    generate_corpus(corpus, posts=20, seed=1, image_size=64)
    config = {
        "data": {
            "train_file": str(corpus / "train.txt"),
            "dev_file": str(corpus / "valid.txt"),
            "image_dir": str(corpus / "images"),
            "feature_cache_dir": None,
        },
        "model": {**tiny_model_keys(*encoders), "grounding": True},
        "train": {"epochs": 1, "progress": False},
    }
    with pytest.raises(SmnerError, match=r"data\.box_dir"):
        Trainer(from_dict(ExperimentConfig, config), tmp_path / "run").fit()


def test_evaluate_reports_grounding_and_predict_gives_boxes_in_pixels(
    trained_grounding_run: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from smner.cli import main
    from smner.predict.predictor import Predictor

    run = trained_grounding_run
    argv = ["evaluate", "--model", str(run["model"]), "--data", str(run["dev"])]
    argv += ["--images", str(run["images"]), "--boxes", str(run["boxes"]), "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    grounding = payload["grounding"]
    assert payload["f1"] > 0.5  # the model finds entities, so the scores below score something
    # MNER is plain NER: the same counts as the entity scores beside it
    assert grounding["mner"]["f1"] == pytest.approx(payload["f1"], abs=1e-9)
    assert grounding["gmner"]["correct"] <= grounding["mner"]["correct"]
    # the post without its photo has its entities "not in the image", whatever the model says
    assert grounding["groundable_entities"] == 3 and grounding["entities"] == 8

    predictor = Predictor.from_pretrained(run["model"])
    result = predictor.predict("George visited Paris today", image=run["images"] / "0.jpg")
    assert result.entities
    for mention in result.to_dict()["entities"]:
        assert "box" in mention and 0.0 <= mention["box_score"] <= 1.0
        if mention["box"] is not None:
            x0, y0, x1, y1 = mention["box"]
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    # without an image, the entities carry no box keys at all
    for mention in predictor.predict("George visited Paris today").to_dict()["entities"]:
        assert "box" not in mention


def test_predicted_boxes_written_by_evaluate_score_the_same_with_score(
    trained_grounding_run: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """evaluate --predictions --predicted-boxes, then score --boxes --pred-boxes: the
    grounding scores of the files equal those evaluate computed from the model's output."""
    from smner.cli import main

    run = trained_grounding_run
    tags, boxes = tmp_path / "pred.txt", tmp_path / "pred-boxes"
    argv = ["evaluate", "--model", str(run["model"]), "--data", str(run["dev"])]
    argv += ["--images", str(run["images"]), "--boxes", str(run["boxes"]), "--json"]
    assert main([*argv, "--predictions", str(tags), "--predicted-boxes", str(boxes)]) == 0
    direct = json.loads(capsys.readouterr().out)["grounding"]
    assert boxes.is_dir()
    scored = ["score", "--gold", str(run["dev"]), "--pred", str(tags), "--json"]
    assert main([*scored, "--boxes", str(run["boxes"]), "--pred-boxes", str(boxes)]) == 0
    from_files = json.loads(capsys.readouterr().out)["grounding"]
    for metric in ("gmner", "mner", "eeg"):
        for key in ("correct", "predicted", "gold"):
            assert from_files[metric][key] == direct[metric][key], (metric, key)
    assert main([*scored, "--boxes", str(run["boxes"])]) != 0
    assert "go together" in capsys.readouterr().err
    assert direct["mner"]["predicted"] > 0  # the model found entities: the check checks


@pytest.mark.integration  # trains
def test_twitter_gmner_layout_trains_evaluates_and_predicts(
    encoders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """configs/twitter-gmner.yaml on a fixture laid out as the Twitter-GMNER release
    (txt/, xml/ with several boxes for one entity and images without an xml file, images/ of
    other sizes than square; one post without its image), with the tiny encoders."""
    import shutil

    import yaml

    from smner.cli import main
    from tests.tiny import tiny_model_keys

    repo = Path(__file__).resolve().parents[1]
    fixture = tmp_path / "data" / "twitter-gmner"
    shutil.copytree(repo / "tests" / "fixtures" / "twitter-gmner", fixture)
    config = yaml.safe_load((repo / "configs" / "twitter-gmner.yaml").read_text())
    assert config["model"]["grounding"] is True
    for key, value in config["data"].items():
        config["data"][key] = str(tmp_path / value)  # the config's paths, under tmp_path
    config["data"]["feature_cache_dir"] = None
    config["model"].update(tiny_model_keys(*encoders))
    config["train"].update({"epochs": 2, "batch_size": 2, "progress": False, "keep_last": False})
    config_file = tmp_path / "gmner.yaml"
    config_file.write_text(yaml.safe_dump(config))

    assert main(["train", "--config", str(config_file), "--output", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    stats = ["data", "stats", str(fixture / "txt" / "train.txt"), "--boxes", str(fixture / "xml")]
    assert main([*stats, "--json"]) == 0
    boxes = json.loads(capsys.readouterr().out)[0]["boxes"]
    assert boxes["groundable_entities"] == 5  # of 9 entities in train.txt

    model = tmp_path / "run" / "best"
    argv = ["evaluate", "--model", str(model), "--data", str(fixture / "txt" / "test.txt")]
    argv += ["--images", str(fixture / "images"), "--boxes", str(fixture / "xml"), "--json"]
    assert main(argv) == 0
    grounding = json.loads(capsys.readouterr().out)["grounding"]
    assert grounding["groundable_entities"] == 2 and grounding["entities"] == 5
    assert grounding["mner"]["gold"] == grounding["gmner"]["gold"] == 5

    posts = tmp_path / "posts.jsonl"
    posts.write_text(json.dumps({"id": "588", "text": "Galaxy S6 is just ... wow !",
                                 "image": str(fixture / "images" / "588.jpg")}) + "\n")  # fmt: skip
    assert main(["predict", "--model", str(model), "--input", str(posts)]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert record["image_status"] == "ok"
    for entity in record["entities"]:
        assert "box" in entity and "box_score" in entity


def test_the_grounding_loss_reaches_only_its_own_head(encoders: tuple[Path, Path]) -> None:
    """Grounding costs the entity types nothing: the same step with and without the grounding
    loss gives every other weight the same gradient, and training clips the head apart."""
    from smner.training.optimization import clip_groups

    posts = fixture_posts()
    grads = []
    for weight in (0.0, 1.0):
        model, collator = tiny_model(encoders, grounding=True, grounding_weight=weight)
        targets = [{ex.entities[0]: [(0.0, 0.0, 0.5, 0.5)]} if img else None for ex, img in posts]
        batch = fixture_batch(model, collator, box_targets=targets)
        model.train()
        torch.manual_seed(1)
        model(batch, labels=batch.span_labels).loss.backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    others = [n for n in grads[0] if not n.startswith("grounding_head.")]
    assert others and all(torch.equal(grads[0][n], grads[1][n]) for n in others)
    assert any(n.startswith("grounding_head.") and grads[1][n].abs().sum() > 0 for n in grads[1])
    head = {id(p) for p in model.grounding_head.parameters()}
    groups = clip_groups(model)
    assert len(groups) == 2 and {id(p) for p in groups[1]} == head


def test_synth_command_takes_ungroundable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from smner.cli import main

    argv = ["synth", "--output", str(tmp_path), "--posts", "40", "--image-size", "64"]
    assert main([*argv, "--ungroundable", "0.5"]) == 0
    assert "entities not in their image:" in capsys.readouterr().out
    assert main([*argv, "--ungroundable", "2"]) != 0
    assert "ungroundable" in capsys.readouterr().err
