"""The synth suite's slices of the test posts and their F1, on hand-made meta.jsonl records
(no training): a post in the wrong slice would credit a module with the wrong posts."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import synth_suite  # noqa: E402
from synth_suite import (  # noqa: E402
    CUED_CLEAN,
    CUED_MISMATCHED,
    SLICES,
    TWO_ENTITY,
    UNCUED,
    assign_slices,
    post_slices,
    read_meta,
    slice_f1,
)


def record(image_id: str, entities: int, **extra: object) -> dict[str, object]:
    return {
        "split": "test",
        "image_id": image_id,
        "entities": [[i, i + 1, "PER"] for i in range(entities)],
        "cues": [],
        **extra,
    }


@pytest.mark.parametrize(
    ("extra", "entities", "expected"),
    [
        ({"image": "mismatched", "text_cue": [True]}, 1, (CUED_MISMATCHED,)),
        ({"image": "unrelated", "text_cue": [True]}, 1, (CUED_MISMATCHED,)),
        ({"image": "own", "text_cue": [True]}, 1, (CUED_CLEAN,)),
        ({"image": "own", "text_cue": [False]}, 1, (UNCUED,)),
        ({"image": "mismatched", "text_cue": [False]}, 1, (UNCUED,)),
        ({"image": "unrelated", "text_cue": [False, False]}, 2, (UNCUED, TWO_ENTITY)),
        ({"image": "own", "text_cue": [True, True]}, 2, (CUED_CLEAN, TWO_ENTITY)),
        ({"image": "mismatched", "text_cue": [True, True]}, 2, (CUED_MISMATCHED, TWO_ENTITY)),
        ({"image": "own", "text_cue": []}, 0, (UNCUED,)),  # no entity: nothing told
        ({"image": "own", "text_cue": True}, 1, (CUED_CLEAN,)),  # a plain flag
        ({"noisy": False}, 1, (UNCUED,)),  # the clean corpus: no knob keys
        ({"noisy": False}, 2, (UNCUED, TWO_ENTITY)),
        ({"noisy": True, "text_cue": [True]}, 1, (CUED_MISMATCHED,)),  # older files
        ({}, 1, (UNCUED,)),
    ],
)
def test_post_slices(extra: dict[str, object], entities: int, expected: tuple[str, ...]) -> None:
    assert post_slices(record("x", entities, **extra)) == expected


def test_slices_are_matched_by_image_id_not_order(tmp_path: Path) -> None:
    meta = tmp_path / "meta.jsonl"
    records = [
        record("a", 1, image="mismatched", text_cue=[True]),
        record("b", 2, image="own", text_cue=[True, True]),
        record("c", 1, image="own", text_cue=[False]),
        record("train-only", 1, image="own", text_cue=[True], split="train"),
    ]
    meta.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n", encoding="utf-8")
    by_id = read_meta(meta)
    assert assign_slices(["c", "a", "b"], by_id) == [
        (UNCUED,),
        (CUED_MISMATCHED,),
        (CUED_CLEAN, TWO_ENTITY),
    ]
    with pytest.raises(ValueError, match=r"no meta\.jsonl record"):
        assign_slices(["a", "missing"], by_id)
    with pytest.raises(ValueError, match=r"no meta\.jsonl record"):
        assign_slices([None], by_id)
    # the gold count of a post that is not the record's post gives it away
    with pytest.raises(ValueError, match="gold entities"):
        assign_slices(["a", "b"], by_id, gold_counts=[2, 2])
    assert assign_slices(["a", "b"], by_id, gold_counts=[1, 2]) == [
        (CUED_MISMATCHED,),
        (CUED_CLEAN, TWO_ENTITY),
    ]


def test_slice_f1_is_micro_f1_over_the_slice_posts() -> None:
    slices = [
        (CUED_MISMATCHED,),  # right
        (CUED_MISMATCHED,),  # one wrong prediction
        (CUED_CLEAN, TWO_ENTITY),  # one of two found
        (UNCUED,),  # a prediction on a post without entities
        (UNCUED, TWO_ENTITY),  # both found
    ]
    per_post = [[1, 1, 1], [0, 1, 1], [1, 1, 2], [0, 1, 0], [2, 2, 2]]
    f1 = slice_f1(per_post, slices)
    assert set(f1) == set(SLICES)
    assert f1[CUED_MISMATCHED] == pytest.approx(2 * 1 / (2 + 2))
    assert f1[CUED_CLEAN] == pytest.approx(2 * 1 / (1 + 2))
    assert f1[UNCUED] == pytest.approx(2 * 2 / (3 + 2))
    assert f1[TWO_ENTITY] == pytest.approx(2 * 3 / (3 + 4))


def test_an_empty_slice_has_no_f1_and_shows_a_dash() -> None:
    slices = [(UNCUED,), (UNCUED, TWO_ENTITY)]
    f1 = slice_f1([[1, 1, 1], [2, 2, 2]], slices)
    assert f1[CUED_MISMATCHED] is None and f1[CUED_CLEAN] is None
    assert f1[UNCUED] == 1.0
    run = {"f1": 1.0, "slice_f1": f1, "alignment": None}
    results = {
        "posts": 20,
        "epochs": 1,
        "seeds": [0],
        "slices": dict(SLICES),
        "corpora": {
            "clean": {
                "slice_posts": {UNCUED: 2, TWO_ENTITY: 1, CUED_MISMATCHED: 0, CUED_CLEAN: 0},
                "test_posts": 2,
                "runs": {"SMNER": [run], "text-only": [run]},
                "bootstrap_p": {"text-only": {"overall": 1.0, CUED_MISMATCHED: None}},
            }
        },
    }
    rows = [line for line in synth_suite.table(results).splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    cells = {
        row[1]: row for row in ([c.strip() for c in r.strip("|").split("|")] for r in rows[1:])
    }
    column = dict(zip(header, cells["text-only"], strict=True))
    assert column[CUED_MISMATCHED] == "-" and column[f"p ({CUED_MISMATCHED})"] == "-"
    assert column[CUED_CLEAN] == "-"
    assert column[UNCUED] == "100.0" and column["p"] == "1.000"


def test_results_from_before_the_slice_grid_ask_for_a_re_run() -> None:
    old = {"posts": 1000, "epochs": 6, "seeds": [0], "conditions": {}}
    assert "re-run the suite" in synth_suite.table(old)


def test_the_grids_smner_rows_train_the_shipped_box_free_recipe() -> None:
    """The grid measures what configs/synth-boxfree.yaml ships, so a change of recipe there
    retrains the grid's image rows instead of leaving them measuring an old one."""
    from smner.config.check import from_dict
    from smner.config.experiment import ExperimentConfig, load_experiment

    shipped = load_experiment(str(synth_suite.SHIPPED_RECIPE)).model
    for name in ("SMNER", "without IB"):
        cfg = synth_suite.config(Path("c"), Path("w"), dict(synth_suite.VARIANTS[name]), 0, 16)
        model = from_dict(ExperimentConfig, cfg).model
        expected = dataclasses.replace(shipped, use_ib=name == "SMNER")
        assert model == expected, name
    assert shipped.heatmaps == "evidence" and shipped.region_attention_target == "imitate"


def test_models_without_cross_attention_train_no_localisation_loss() -> None:
    from smner.config.check import from_dict
    from smner.config.experiment import ExperimentConfig

    for name, overrides in synth_suite.VARIANTS.items():
        cfg = synth_suite.config(Path("corpus"), Path("work"), dict(overrides), 0, 16)
        assert "box_dir" not in cfg["data"], name
        model = from_dict(ExperimentConfig, cfg).model
        attends = model.use_image and model.use_cross_attention
        assert (model.region_types, model.region_attention, model.entity_competition) == (
            (1.0, 2.0, 1.0) if attends else (0.0, 0.0, 0.0)
        ), name
