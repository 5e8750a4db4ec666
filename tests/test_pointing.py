"""Alignment metrics: hand-worked grids, boxes and crops (a non-square image, centre crop)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from smner.data.types import Entity
from smner.encoders.preprocessing import ImagePreprocessing
from smner.errors import DataFormatError
from smner.evaluation.pointing import (
    AlignmentScorer,
    box_share,
    cell_box,
    format_alignment,
    load_entity_boxes,
    mass_in_box,
    pointing_hit,
)

# A 400 x 200 image: the short side goes to 256 (512 x 256), the centre 224 square is kept,
# which is x 144..368, y 16..240 of the resized image, or x 112.5..287.5, y 12.5..187.5 here.
CROP = (112.5, 12.5, 287.5, 187.5)
PEAK_TOP_RIGHT = np.array([[0.1, 0.7], [0.1, 0.1]])


def test_crop_of_a_wide_image_is_its_centre():
    assert ImagePreprocessing(size=224, resize=256).crop_box(400, 200) == pytest.approx(CROP)


def test_cells_split_the_crop_not_the_image():
    # 2 x 2 grid over a 175 x 175 crop: cells of 87.5 px
    assert cell_box(0, 1, (2, 2), CROP) == pytest.approx((200.0, 12.5, 287.5, 100.0))
    assert cell_box(1, 0, (2, 2), CROP) == pytest.approx((112.5, 100.0, 200.0, 187.5))


def test_pointing_uses_the_centre_of_the_most_attended_cell():
    # that cell's centre is (243.75, 56.25)
    assert pointing_hit(PEAK_TOP_RIGHT, (220, 30, 300, 90), CROP)
    assert not pointing_hit(PEAK_TOP_RIGHT, (100, 0, 243, 200), CROP)  # ends exclusive
    assert pointing_hit(PEAK_TOP_RIGHT, (100, 0, 244, 200), CROP)
    # Over the whole image instead of the crop, that cell would be centred at (300, 50):
    assert not pointing_hit(PEAK_TOP_RIGHT, (280, 30, 320, 90), CROP)


def test_pointing_on_a_non_square_grid():
    attention = np.zeros((1, 4))
    attention[0, 0] = 1.0  # leftmost quarter of the crop: x 112.5..156.25, centre 134.375
    assert pointing_hit(attention, (120, 0, 140, 200), CROP)
    assert not pointing_hit(attention, (140, 0, 400, 200), CROP)


def test_mass_in_box_splits_cells_by_area():
    one_cell = np.array([[0.0, 1.0], [0.0, 0.0]])
    assert mass_in_box(one_cell, (200, 12.5, 287.5, 100), CROP) == pytest.approx(1.0)
    assert mass_in_box(one_cell, (200, 12.5, 243.75, 100), CROP) == pytest.approx(0.5)
    # the grid's own scale does not matter (weights are renormalised)
    assert mass_in_box(3 * one_cell, (200, 12.5, 243.75, 100), CROP) == pytest.approx(0.5)
    uniform = np.full((2, 2), 0.25)
    left_half = (112.5, 12.5, 200, 187.5)
    assert mass_in_box(uniform, left_half, CROP) == pytest.approx(0.5)


def test_box_share_is_what_uniform_attention_scores():
    assert box_share((112.5, 12.5, 200, 187.5), CROP) == pytest.approx(0.5)
    # the part of a box outside the crop was never seen and does not count
    assert box_share((0, 0, 200, 200), CROP) == pytest.approx(0.5)
    uniform = np.full((7, 7), 1 / 49)
    box = (130, 40, 250, 160)
    assert mass_in_box(uniform, box, CROP) == pytest.approx(box_share(box, CROP))


@dataclass
class _Predicted:
    entity: Entity
    attention: np.ndarray | None
    global_attention: float | None = 0.1


def test_scorer_counts_only_correct_entities_and_groups_by_post_size():
    left, right = Entity(0, 1, "PER"), Entity(2, 3, "LOC")
    boxes = {left: [(112.5, 12.5, 200, 187.5)], right: [(200, 12.5, 287.5, 187.5)]}
    looks_left = np.array([[0.6, 0.1], [0.2, 0.1]])
    looks_right = np.array([[0.1, 0.6], [0.1, 0.2]])
    scorer = AlignmentScorer()
    # two-entity post: both right, one points at the wrong half
    scorer.update(
        [left, right], [_Predicted(left, looks_left), _Predicted(right, looks_left)], boxes, CROP
    )
    # one-entity post, right type and place
    scorer.update([left], [_Predicted(left, looks_left)], {left: boxes[left]}, CROP)
    # a wrongly typed prediction is not scored for pointing, and the post is not fully right
    wrong = Entity(0, 1, "ORG")
    scorer.update([left], [_Predicted(wrong, looks_right)], {left: boxes[left]}, CROP)
    # a post without entities and without boxes counts only for "fully right"
    scorer.update([], [], None, None)
    result = scorer.result()
    assert result.pointing == {"value": 2 / 3, "hits": 2, "total": 3}
    assert result.pointing_by_entities[1]["value"] == 1.0
    assert result.pointing_by_entities[2] == {"value": 0.5, "hits": 1, "total": 2}
    assert result.posts_right[0] == {"value": 1.0, "hits": 1, "total": 1}
    assert result.posts_right[1] == {"value": 0.5, "hits": 1, "total": 2}
    assert result.posts_right[2]["hits"] == 1
    assert result.mass_in_box == pytest.approx(np.mean([0.8, 0.2, 0.8]))
    assert result.uniform_mass == pytest.approx(0.5)
    assert result.global_attention == pytest.approx(0.1)
    assert "pointing accuracy: 0.67 (2/3)" in format_alignment(result)


def test_an_entity_with_several_boxes_is_hit_by_any():
    entity = Entity(0, 1, "PER")
    boxes = {entity: [(112.5, 12.5, 150, 50), (200, 12.5, 287.5, 100)]}
    scorer = AlignmentScorer()
    scorer.update([entity], [_Predicted(entity, PEAK_TOP_RIGHT)], boxes, CROP)
    assert scorer.result().pointing["hits"] == 1


def test_boxes_from_meta_jsonl(tmp_path):
    records = [
        {
            "image_id": "a",
            "entities": [[0, 1, "PER"], [3, 5, "LOC"]],
            "cues": [{"type": "PER", "box": [0, 0, 10, 10]}, {"type": "LOC", "box": [5, 5, 9, 9]}],
            "noisy": False,
        },
        {
            "image_id": "b",
            "entities": [[0, 1, "PER"]],
            "cues": [{"type": "ORG", "box": [0, 0, 10, 10]}],
            "noisy": True,
        },
    ]
    path = tmp_path / "meta.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    boxes = load_entity_boxes(path)
    assert boxes["a"] == {
        Entity(0, 1, "PER"): [(0, 0, 10, 10)],
        Entity(3, 5, "LOC"): [(5, 5, 9, 9)],
    }
    assert boxes["b"] == {}  # a mismatched image shows another post's cues
    path.write_text(json.dumps(records[0]) + "\n" + '{"image_id": "c"}\n')
    with pytest.raises(DataFormatError, match=r"meta.jsonl:2: expected a meta.jsonl record"):
        load_entity_boxes(path)


@dataclass
class _Grounded(_Predicted):
    image_index: int | None = 0


def test_posts_with_several_images_score_the_image_chosen_and_point_only_there():
    person, place = Entity(0, 1, "PER"), Entity(2, 3, "LOC")
    located = {person: (0, [(112.5, 12.5, 200, 187.5)]), place: (2, [(200, 12.5, 287.5, 187.5)])}
    looks_left = np.array([[0.6, 0.1], [0.2, 0.1]])
    looks_right = np.array([[0.1, 0.6], [0.1, 0.2]])
    scorer = AlignmentScorer()
    crops = [CROP, None, CROP]  # the middle image could not be read
    # the person in its own image, at its place; the place in the wrong image, though the
    # attention over that image peaks where the place's box would be
    scorer.update_images(
        [person, place],
        [
            _Grounded(person, looks_left, image_index=0),
            _Grounded(place, looks_right, image_index=0),
        ],
        located,
        crops,
    )
    # the place in its own image, at its place
    scorer.update_images([place], [_Grounded(place, looks_right, image_index=2)], located, crops)
    result = scorer.result()
    assert result.image_chosen == {"value": 2 / 3, "hits": 2, "total": 3}
    assert result.pointing == {"value": 2 / 3, "hits": 2, "total": 3}
    assert result.mass_in_box == pytest.approx(np.mean([0.8, 0.0, 0.8]))
    assert result.uniform_mass == pytest.approx(0.25)  # a half of one of two readable images
    text = format_alignment(result)
    assert "entity grounded in its own image 0.67 (2/3)" in text
    one_image = AlignmentScorer()
    one_image.update(
        [person], [_Predicted(person, looks_left)], {person: [(112.5, 12.5, 200, 187.5)]}, CROP
    )
    assert one_image.result().image_chosen is None
    assert "own image" not in format_alignment(one_image.result())


def test_boxes_of_posts_with_several_images_from_meta_jsonl_and_voc(tmp_path):
    from smner.data.boxes import format_voc
    from smner.data.types import Example

    record = {
        "image_id": "p_0",
        "image_ids": ["p_0", "p_1", "p_2"],
        "entities": [[0, 1, "PER"], [2, 3, "LOC"]],
        "cues": [
            {"type": "PER", "box": [0, 0, 10, 10], "entity": 0, "image_index": 0},
            {"type": "LOC", "box": [5, 5, 9, 9], "entity": 1, "image_index": 2},
        ],
    }
    path = tmp_path / "meta.jsonl"
    path.write_text(json.dumps(record) + "\n")
    boxes = load_entity_boxes(path)
    assert boxes == {
        "p_0": {Entity(0, 1, "PER"): [(0, 0, 10, 10)]},
        "p_1": {},
        "p_2": {Entity(2, 3, "LOC"): [(5, 5, 9, 9)]},
    }
    example = Example(
        tokens=["Ann", "in", "Rome", "!"],
        tags=["B-PER", "O", "B-LOC", "O"],
        image_id="p_0",
        image_ids=["p_0", "p_1", "p_2"],
        entities=[Entity(0, 1, "PER"), Entity(2, 3, "LOC")],
    )
    folder = tmp_path / "boxes"
    folder.mkdir()
    (folder / "p_0.xml").write_text(format_voc("p_0", (20, 20), [("ann", (0, 0, 10, 10))]))
    (folder / "p_2.xml").write_text(format_voc("p_2", (20, 20), [("rome", (5, 5, 9, 9))]))
    from_voc = load_entity_boxes(folder, [example])
    assert from_voc["p_0"] == {Entity(0, 1, "PER"): [(0, 0, 10, 10)]}
    assert from_voc["p_2"] == {Entity(2, 3, "LOC"): [(5, 5, 9, 9)]}
    record["cues"][1]["image_index"] = 3
    path.write_text(json.dumps(record) + "\n")
    with pytest.raises(DataFormatError, match=r"meta.jsonl:1: a cue's image_index 3"):
        load_entity_boxes(path)


def test_the_centre_baseline_points_at_the_middle_of_what_the_model_saw():
    """On the same entities as pointing: a hit where the entity's box holds the crop's centre
    (of the first image, for posts with several), whatever the attention."""
    x0, y0, x1, y1 = CROP
    middle = ((x0 + x1) / 2, (y0 + y1) / 2)
    central, aside = Entity(0, 1, "PER"), Entity(2, 3, "LOC")
    boxes = {
        central: [(middle[0] - 10, middle[1] - 10, middle[0] + 10, middle[1] + 10)],
        aside: [(x0, y0, x0 + 10, y0 + 10)],
    }
    scorer = AlignmentScorer()
    looks = np.array([[0.7, 0.1], [0.1, 0.1]])
    scorer.update(
        [central, aside], [_Predicted(central, looks), _Predicted(aside, looks)], boxes, CROP
    )
    result = scorer.result()
    assert result.centre == {"value": 0.5, "hits": 1, "total": 2}
    assert result.centre["total"] == result.pointing["total"]
    assert "(always the centre: 0.50 (1/2))" in format_alignment(result)
    several = AlignmentScorer()
    located = {central: (1, boxes[central]), aside: (0, boxes[aside])}
    several.update_images(
        [central, aside],
        [_Grounded(central, looks, image_index=1), _Grounded(aside, looks, image_index=0)],
        located,
        [CROP, CROP],
    )
    assert several.result().centre == {"value": 0.0, "hits": 0, "total": 2}  # not in image 0


def test_two_entity_posts_are_sorted_by_where_each_name_looks_whatever_its_type():
    """Own cues, swapped, one cue and elsewhere, read from the gold spans' attention even when
    the type is wrong; a gold span without a prediction is "elsewhere"."""
    left, right = Entity(0, 1, "PER"), Entity(2, 3, "LOC")
    boxes = {left: [(112.5, 12.5, 200, 187.5)], right: [(200, 12.5, 287.5, 187.5)]}
    looks_left = np.array([[0.6, 0.1], [0.2, 0.1]])
    looks_right = np.array([[0.1, 0.6], [0.1, 0.2]])
    as_org = Entity(2, 3, "ORG")  # the right span, wrongly typed: still read for where it looks
    scorer = AlignmentScorer()
    posts = [
        [_Predicted(left, looks_left), _Predicted(as_org, looks_right)],  # own cues
        [_Predicted(left, looks_right), _Predicted(right, looks_left)],  # swapped
        [_Predicted(left, looks_left), _Predicted(as_org, looks_left)],  # one cue
        [_Predicted(left, looks_left)],  # the second name not predicted: elsewhere
    ]
    for predicted in posts:
        scorer.update([left, right], predicted, boxes, CROP)
    scorer.update([left], [_Predicted(left, looks_left)], {left: boxes[left]}, CROP)  # not counted
    result = scorer.result()
    assert result.two_entity_peaks == {"own cues": 1, "swapped": 1, "one cue": 1, "elsewhere": 1}
    assert result.to_dict()["two_entity_peaks"] == result.two_entity_peaks
    assert (
        "two-entity posts by where each name's attention peaks (any type): own cues 1, "
        "swapped 1, one cue 1, elsewhere 1 (of 4)"
    ) in format_alignment(result)
    one_entity_only = AlignmentScorer()
    one_entity_only.update([left], [_Predicted(left, looks_left)], {left: boxes[left]}, CROP)
    assert one_entity_only.result().two_entity_peaks is None
