"""What the Predictor promises for every model type, through its public API only.

For each registered type (and the variants that change what a prediction holds: grounding
boxes, text-only models), on an untrained tiny model (it predicts plenty of entities, which is
all these checks need):

- a post with no words (empty, or whitespace of any kind) is refused with a SmnerError that
  says so, alone or in a batch, never an IndexError from deep inside;
- a batch that mixes every accepted form (raw text, a token list, a mapping, a PostInput), with
  and without images, gives what predicting each post alone gives;
- ``save_pretrained`` then ``from_pretrained`` gives the same predictions.

A new model type joins by adding a row to ``CASES``; the first test fails until every
registered type has one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from smner.data.posts import PostInput
from smner.errors import SmnerError
from smner.model.base import NERModel
from smner.predict.predictor import Predictor

#: case name -> model config overrides (see tests.tiny.tiny_config)
CASES: dict[str, dict[str, object]] = {
    "smner": {},
    "smner-grounding": {"grounding": True},
    "smner-text-only": {"use_image": False},
    "bio-crf-image": {"type": "bio-tagger", "tagger_head": "crf"},
    "bio-softmax-text-only": {"type": "bio-tagger", "tagger_head": "softmax", "use_image": False},
}

POST = "George visited Paris today"

#: posts without a word: empty, ASCII and Unicode whitespace (no-break, em and ideographic
#: spaces, a line separator)
BLANK = ["", "   ", " \n\t\r ", "\u00a0\u2003", "\u3000", "\u2028"]


@pytest.fixture(scope="module", params=sorted(CASES))
def typed_predictor(
    request: pytest.FixtureRequest,
    encoders: tuple[Path, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Predictor]:
    """A saved tiny model of the case's type, loaded as users load one."""
    import torch

    from smner.encoders.text import load_tokenizer
    from smner.model import build_model
    from tests.tiny import tiny_config

    folder = tmp_path_factory.mktemp(f"contract-{request.param}") / "model"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(tiny_config(*encoders, **CASES[request.param]))
    model.save_pretrained(folder, tokenizer=load_tokenizer(encoders[0]))
    yield Predictor.from_pretrained(folder)


def test_every_registered_model_type_has_a_case() -> None:
    covered = {str(overrides.get("type", "smner")) for overrides in CASES.values()}
    assert covered == set(NERModel.registry)


def records(predictions: list[Any]) -> list[dict[str, Any]]:
    return [p.to_dict(explain=True) for p in predictions]


def assert_close(got: object, expected: object, where: str = "") -> None:
    """Equal, but for floats (scores, attention, boxes) up to 1e-5: a post batched with longer
    ones is padded, which moves a score in its sixth decimal."""
    if isinstance(expected, float):
        assert isinstance(got, float) and math.isclose(got, expected, abs_tol=1e-5), where
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), where
        for key, value in expected.items():
            assert_close(got[key], value, f"{where}.{key}")
    elif isinstance(expected, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(expected), where
        for i, (item, value) in enumerate(zip(got, expected, strict=True)):
            assert_close(item, value, f"{where}[{i}]")
    else:
        assert got == expected, where


# --- a post without words --------------------------------------------------------------------


@pytest.mark.parametrize("blank", BLANK, ids=repr)
def test_a_post_without_words_is_a_clear_error(typed_predictor: Predictor, blank: str) -> None:
    red = Image.new("RGB", (32, 32), (200, 40, 40))
    for form in (blank, PostInput(text=blank), {"text": blank}, PostInput(text=blank, image=red)):
        with pytest.raises(SmnerError, match="no tokens"):
            typed_predictor.predict(form)
    with pytest.raises(SmnerError, match="no tokens"):
        typed_predictor.predict(PostInput(tokens=[]))
    if blank:  # a token list (or a record's) with a blank token
        for form in ([blank], ["George", blank], {"tokens": [blank]}):
            with pytest.raises(SmnerError, match="non-blank"):
                typed_predictor.predict(form)


def test_a_post_input_of_blank_tokens_is_a_clear_error(typed_predictor: Predictor) -> None:
    for tokens in (["   "], ["George", "\u3000"], ["George", ""]):
        with pytest.raises(SmnerError, match="non-blank"):
            typed_predictor.predict(PostInput(tokens=tokens))


def test_a_blank_post_in_a_batch_is_named_and_nothing_is_predicted(
    typed_predictor: Predictor, tmp_path: Path
) -> None:
    image = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (200, 40, 40)).save(image)
    posts = [POST, {"text": "Paris", "image": str(image)}, "  \n ", ["New", "York"]]
    with pytest.raises(SmnerError, match=r"post 2: .*no tokens"):
        typed_predictor.predict_many(posts)
    with pytest.raises(SmnerError, match=r"post 2: .*no tokens"):
        typed_predictor.predict_many(posts, batch_size=1)


# --- a mixed batch ---------------------------------------------------------------------------


def mixed_posts(folder: Path) -> list[Any]:
    """Every accepted form, some with an image (as a path, bytes or a PIL image), some
    without, one whose image file is missing, of several lengths."""
    red, blue = folder / "red.jpg", folder / "blue.png"
    Image.new("RGB", (48, 32), (200, 40, 40)).save(red)
    Image.new("RGB", (24, 40), (40, 40, 200)).save(blue)
    return [
        POST,
        ["RT", "@george", ":", "Apple", "store", "in", "New", "York"],
        {"text": "the Paris of Apple is great", "image": str(red), "id": "m"},
        PostInput(text="loves New York with George", image=blue.read_bytes(), id=3),
        PostInput(tokens=["George", "in", "Paris"], image=Image.new("RGB", (64, 64), (9, 99, 9))),
        {"tokens": ["Apple"]},
        PostInput(text="George visited New York and Paris with Apple today", image=red),
        {"text": "Paris at night", "image": str(folder / "absent.jpg")},
        ("New", "York", "today"),
    ]


def test_a_mixed_batch_gives_what_one_by_one_gives(
    typed_predictor: Predictor, tmp_path: Path
) -> None:
    posts = mixed_posts(tmp_path)
    alone = records([typed_predictor.predict(post) for post in posts])
    for batch_size in (32, 3):
        together = records(typed_predictor.predict_many(posts, batch_size=batch_size))
        assert len(together) == len(posts)
        for i, (got, expected) in enumerate(zip(together, alone, strict=True)):
            assert_close(got, expected, f"batch_size={batch_size}, post {i}")
    assert sum(len(r["entities"]) for r in alone) > 0  # the comparison compares something
    with_image = {2: "ok", 3: "ok", 4: "ok", 6: "ok", 7: "missing"}
    if not typed_predictor.model.config.use_image:  # a text-only model never opens an image
        with_image = dict.fromkeys(with_image, "ignored (text-only model)")
    statuses = [with_image.get(i, "no image") for i in range(len(posts))]
    assert [r["image_status"] for r in alone] == statuses


# --- save and load ---------------------------------------------------------------------------


def test_save_then_load_predicts_the_same(typed_predictor: Predictor, tmp_path: Path) -> None:
    posts = mixed_posts(tmp_path)
    before = records(typed_predictor.predict_many(posts))
    typed_predictor.save_pretrained(tmp_path / "saved")
    loaded = Predictor.from_pretrained(tmp_path / "saved")
    assert type(loaded.model) is type(typed_predictor.model)
    assert loaded.model.config == typed_predictor.model.config
    assert records(loaded.predict_many(posts)) == before
    assert records([loaded.predict(post) for post in posts[:3]]) == records(
        [typed_predictor.predict(post) for post in posts[:3]]
    )
