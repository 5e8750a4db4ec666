"""The processor saved with a model: one way to prepare a post, checked against the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import smner.data.posts
from smner.data.posts import PostInput, post_words
from smner.errors import SmnerError
from smner.predict.predictor import Predictor
from smner.processing.processor import Processor, ProcessorConfig
from smner.saved.folder import PROCESSOR_FILE

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saved-0.1.0"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture's SMNER folder re-saved by this version (with ``processor.json``)."""
    folder = tmp_path_factory.mktemp("processor") / "model"
    Predictor.from_pretrained(FIXTURE / "smner").save_pretrained(folder)
    return folder


def edited(saved: Path, tmp_path: Path, **changes: object) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    payload = json.loads((copy / PROCESSOR_FILE).read_text())
    payload.update(changes)
    (copy / PROCESSOR_FILE).write_text(json.dumps(payload))
    return copy


def test_processor_json_holds_every_setting_of_the_model(saved: Path) -> None:
    payload = json.loads((saved / PROCESSOR_FILE).read_text())
    config = json.loads((saved / "config.json").read_text())["model"]
    assert payload["labels"] == config["labels"] and payload["scheme"] == "spans"
    assert payload["max_span_width"] == config["max_span_width"]
    assert payload["image"] == config["image_preprocessing"]
    assert Processor.from_pretrained(FIXTURE / "bio-tagger").config.scheme == "bio"
    assert Processor.from_pretrained(FIXTURE / "smner-text-only").image is None


def test_a_processor_of_another_model_is_refused_naming_the_file(
    saved: Path, tmp_path: Path
) -> None:
    folder = edited(saved, tmp_path, max_span_width=2)
    with pytest.raises(SmnerError, match=r"processor\.json does not match .*max_span_width"):
        Predictor.from_pretrained(folder)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format_version": 99}, "processor format 99"),
        ({"colour": "red"}, "unknown processor settings: colour"),
        ({"max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"scheme": "iob"}, "scheme must be 'spans' or 'bio'"),
    ],
)
def test_bad_processor_settings_name_the_file(
    saved: Path, tmp_path: Path, changes: dict, message: str
) -> None:
    folder = edited(saved, tmp_path, **changes)
    with pytest.raises(SmnerError, match=rf"{PROCESSOR_FILE}: .*{message}"):
        Processor.from_pretrained(folder)


def test_processor_json_that_is_not_json_names_the_file(saved: Path, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(saved, copy)
    (copy / PROCESSOR_FILE).write_text("{not json")
    with pytest.raises(SmnerError, match=r"processor\.json: not valid JSON"):
        Processor.from_pretrained(copy)


def test_the_token_limit_travels_with_the_processor(saved: Path) -> None:
    predictor = Predictor.from_pretrained(saved, max_tokens=3)
    assert predictor.max_tokens == 3 == predictor.processor.config.max_tokens
    with pytest.raises(SmnerError, match="expected at most 3"):
        predictor.predict("one two three four")
    assert ProcessorConfig.from_dict(predictor.processor.to_dict()).max_tokens == 3


def test_a_post_is_split_once_however_often_it_is_checked(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    split = smner.data.posts.tokenize_tweet
    monkeypatch.setattr(
        smner.data.posts, "tokenize_tweet", lambda text: calls.append(1) or split(text)
    )
    post = PostInput(text="George visited Paris")
    post_words(post)  # what a reader or the server checks before queueing the post
    prediction = Predictor.from_pretrained(saved).predict_many([post])[0]
    assert prediction.tokens == ["George", "visited", "Paris"] and len(calls) == 1
    post.text = "George left"  # a changed post is split again
    assert [t.text for t in post.words()] == ["George", "left"] and len(calls) == 2
