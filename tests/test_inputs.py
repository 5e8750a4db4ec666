"""Posts as users have them: every accepted form, mixed in one call, and the errors of others."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import smner
from smner.cli import main
from smner.data.posts import InvalidPost, PostInput, as_post
from smner.predict.predictor import Predictor
from tests.test_serve import POST


def entities(prediction: smner.PostPrediction) -> list[tuple[str, str, int, int]]:
    return [(m.text, m.type, m.start, m.end) for m in prediction.entities]


def test_the_issue_example_works(tiny_predictor: Predictor) -> None:
    (result,) = tiny_predictor.predict_many(["Kevin Durant joins the Warriors"])
    assert result.tokens == ["Kevin", "Durant", "joins", "the", "Warriors"]
    assert result.image_status == "no image"


def test_every_form_mixed_in_one_call(tiny_predictor: Predictor, post_images: Path) -> None:
    image_path = post_images / "0.jpg"
    image_bytes = image_path.read_bytes()
    picture = Image.open(image_path)
    tokens = POST.split()
    posts = [
        POST,
        tokens,
        {"id": "m1", "text": POST, "image": str(image_path), "lang": "en"},
        {"tokens": tokens, "image": image_bytes},
        {"text": POST, "image": picture, "id": 7},
        PostInput(text=POST, image=image_path, id="p"),
        tuple(tokens),
    ]
    results = tiny_predictor.predict_many(posts)
    assert len(results) == len(posts)
    alone_text = tiny_predictor.predict(POST)
    alone_image = tiny_predictor.predict(POST, image=image_path)
    assert entities(results[0]) == entities(alone_text)
    assert entities(results[1]) == entities(alone_text)
    for i in (2, 3, 4, 5):
        assert results[i].image_status == "ok"
        assert entities(results[i]) == entities(alone_image), i
    assert [r.id for r in results] == [None, None, "m1", None, 7, "p", None]
    record = results[2].to_dict()
    assert list(record) == ["id", "text", "image", "lang", "tokens", "image_status", "entities"]
    assert record["image"] == str(image_path) and record["lang"] == "en"
    assert "image" not in results[3].to_dict()  # bytes are not written into a record
    assert set(results[1].to_dict()) == {"tokens", "image_status", "entities"}
    assert results[0].to_dict()["text"] == POST


def test_predict_and_call_take_the_same_forms(tiny_predictor: Predictor, post_images: Path) -> None:
    image_path = post_images / "0.jpg"
    expected = entities(tiny_predictor.predict(POST, image=image_path))
    assert entities(tiny_predictor.predict({"text": POST, "image": image_path})) == expected
    assert entities(tiny_predictor.predict(PostInput(text=POST), image=image_path)) == expected
    assert entities(tiny_predictor.predict(POST.split(), image=image_path.read_bytes())) == expected
    one = tiny_predictor(POST, image=image_path)
    assert isinstance(one, smner.PostPrediction) and entities(one) == expected
    many = tiny_predictor([POST, {"text": POST, "image": str(image_path)}, POST.split()])
    assert isinstance(many, list) and len(many) == 3
    assert entities(many[1]) == expected
    with pytest.raises(TypeError, match="image= goes with one post"):
        tiny_predictor([POST], image=image_path)


@pytest.mark.parametrize(
    ("posts", "message"),
    [
        (["ok", 42], r"post 1: expected a string \(raw text\), a list of token strings, .*got int"),
        ([None], r"post 0: expected .*; got NoneType"),
        ([{"txt": "x"}], r'post 0: expected an object with "text" \(string\) or "tokens"'),
        ([{"text": 3, "tokens": ["a"]}], r'post 0: "text" must be a string'),
        (["ok", ["a", 1]], r'post 1: "tokens" must be a list of non-blank strings'),
        ([{"text": "ok", "image": 5}], r'post 0: "image" must be a path, bytes or a PIL image'),
        ("George visited Paris", r"predict_many takes a list of posts, got one str"),
    ],
)
def test_other_forms_are_a_type_error_naming_the_position(
    tiny_predictor: Predictor, posts: object, message: str
) -> None:
    with pytest.raises(TypeError, match=message):
        tiny_predictor.predict_many(posts)  # type: ignore[arg-type]


def test_a_bad_post_is_refused_before_any_prediction(
    tiny_predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    monkeypatch.setattr(tiny_predictor, "_predict_batch", lambda posts: calls.append(posts))
    with pytest.raises(InvalidPost):
        tiny_predictor.predict_many(["fine", "also fine", 3.5])
    assert calls == []


def test_to_dict_is_exactly_the_cli_record(
    tiny_predictor: Predictor,
    tiny_model_dir: Path,
    post_images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image = post_images / "0.jpg"
    records = [
        {"id": "a", "text": POST, "image": str(image)},
        {"tokens": ["loves", "New", "York"], "note": "kept"},
        {"id": 3, "text": "the of and", "image": str(tmp_path / "absent.jpg")},
    ]
    source = tmp_path / "posts.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    model = str(tiny_model_dir)
    assert main(["predict", "--model", model, "--input", str(source), "--explain"]) == 0
    written = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    records[1]["id"] = "2"  # the CLI numbers a record without an id by its line
    python = [p.to_dict(explain=True) for p in tiny_predictor.predict_many(records)]
    assert written == python
    assert written[2]["image_status"] == "missing"

    assert main(["predict", "--model", model, "--text", POST, "--image", str(image)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    alone = tiny_predictor.predict({"id": "1", "text": POST, "image": str(image)})
    assert json.loads(line) == alone.to_dict()


def test_one_post_type_for_python_cli_and_server() -> None:
    import smner.predict.predictor
    import smner.serve.app

    assert smner.PostInput is smner.predict.predictor.PostInput is PostInput
    assert smner.serve.app.PostInput is PostInput
    assert not hasattr(smner.serve.app, "_Post")
    assert as_post({"text": "x", "id": 1}) == PostInput(text="x", id=1)
    assert as_post(PostInput(tokens=["a"])) == PostInput(tokens=["a"])


@pytest.mark.integration  # a Python process that imports all of smner
def test_top_level_names_are_listed_and_lazy() -> None:
    listed = dir(smner)
    names = ("Predictor", "Processor", "PostInput", "PostPrediction", "Mention", "train")
    for name in (*names, "read_conll"):
        assert name in listed and name in smner.__all__
    for name in ("Any", "TYPE_CHECKING", "annotations", "importlib"):
        assert name not in listed
    code = (
        "import sys, smner; assert 'torch' not in sys.modules; "
        "from smner import *; assert Predictor and PostInput and read_conll and train"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_python_dash_m_smner_runs_the_command() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "smner", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"smner {smner.__version__}"


def test_predict_text_dash_reads_posts_from_stdin(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_model_dir)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{POST}\n\nloves New York\n"))
    assert main(["predict", "--model", model, "--text", "-"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["id"], r["text"]) for r in out] == [("1", POST), ("2", "loves New York")]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    assert main(["predict", "--model", model, "--text", "-"]) == 1
    assert "no text on stdin" in capsys.readouterr().err
