"""One prediction pipeline in three stages: prepare (CPU) -> forward (device) -> postprocess.

Every entry point goes through the same forward stage; a text is split into words once, in
the server too; image features that the encoder computes stay on its device.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

import smner.data.posts
import smner.predict.loop
from smner.data.images import ImageStatus
from smner.data.posts import PostInput
from smner.evaluation.evaluate import evaluate_saved_model
from smner.predict.predictor import Predictor
from smner.processing.batching import ImageInput
from smner.processing.processor import Processor
from smner.serve.app import create_app
from smner.serve.settings import ServeSettings
from tests.tiny import solid_image

TEXT = "George Washington visited Paris with Apple"


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    solid_image((200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def count_splits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    split = smner.data.posts.tokenize_tweet
    monkeypatch.setattr(
        smner.data.posts, "tokenize_tweet", lambda text: calls.append(text) or split(text)
    )
    return calls


def test_the_server_splits_each_text_once(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor.from_pretrained(tiny_model_dir)
    calls = count_splits(monkeypatch)
    with TestClient(create_app(predictor, ServeSettings())) as client:
        image = base64.b64encode(png_bytes()).decode("ascii")
        for body in ({"text": TEXT}, {"text": TEXT + " today", "image": image}):
            calls.clear()
            response = client.post("/v1/predict", json=body)
            assert response.status_code == 200, response.text
            assert calls == [body["text"]], "the request's text was split more than once"


def test_predict_many_splits_each_text_once(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = Predictor.from_pretrained(tiny_model_dir)
    calls = count_splits(monkeypatch)
    predictor.predict_many([TEXT, "Paris again", {"text": "Apple in Paris"}])
    assert sorted(calls) == sorted([TEXT, "Paris again", "Apple in Paris"])


def test_prepare_records_every_image_outcome(tiny_model_dir: Path, tmp_path: Path) -> None:
    processor = Processor.from_pretrained(tiny_model_dir)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    outcomes = [
        (None, ImageStatus.NO_IMAGE),
        (tmp_path / "absent.jpg", ImageStatus.MISSING),
        (broken, ImageStatus.UNREADABLE),
        (png_bytes(), ImageStatus.OK),
        (solid_image((1, 2, 3)), ImageStatus.OK),
    ]
    for image, status in outcomes:
        prepared = processor.prepare(PostInput(text=TEXT, image=image))
        assert prepared.image_status is status
        assert (prepared.picture is not None) == (status is ImageStatus.OK)
        assert prepared.words == TEXT.split()
        assert [(s.start, s.end) for s in prepared.spans or []][:2] == [(0, 6), (7, 17)]


def test_a_text_only_model_never_opens_the_image(tmp_path: Path) -> None:
    from smner.encoders.text import load_tokenizer
    from smner.model import build_model
    from tests.tiny import make_image_encoder, make_text_encoder, tiny_config

    text, image = make_text_encoder(tmp_path / "text"), make_image_encoder(tmp_path / "image")
    model = build_model(tiny_config(text, image, use_image=False))
    processor = Processor.for_model(model.config, load_tokenizer(text))
    prepared = processor.prepare(PostInput(text=TEXT, image=tmp_path / "absent.jpg"))
    assert (prepared.image_status, prepared.picture) == (ImageStatus.IGNORED, None)
    predictor = Predictor(model, processor)
    record = predictor.predict(TEXT, image=tmp_path / "absent.jpg").to_dict()
    assert record["image_status"] == "ignored (text-only model)"


def test_every_entry_point_runs_the_one_forward_stage(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Predictor, evaluation (and with it training's dev scoring, which calls the same
    predict_examples) reach the model only through smner.predict.loop.forward."""
    seen: list[int] = []
    original = smner.predict.loop.forward

    def spy(model, processor, prepared, device):  # type: ignore[no-untyped-def]
        seen.append(len(prepared))
        return original(model, processor, prepared, device)

    monkeypatch.setattr(smner.predict.loop, "forward", spy)
    monkeypatch.setattr("smner.predict.predictor.forward", spy)
    Predictor.from_pretrained(tiny_model_dir).predict_many([TEXT, "Paris"])
    assert seen == [2]
    data = tmp_path / "dev.txt"
    data.write_text("IMGID:1\nGeorge\tB-PER\nin\tO\nParis\tB-LOC\n\nIMGID:2\nApple\tB-ORG\n\n")
    seen.clear()
    evaluate_saved_model(tiny_model_dir, data, batch_size=8)
    assert seen == [2]


def test_batch_features_stay_on_the_device_they_were_computed_on() -> None:
    """The batch's image tensors are allocated where the encoder's features are (the meta
    device stands in for a GPU), instead of copying each post's features to the CPU."""
    from smner.processing.batching import add_images

    batch = smner.processing.batching.Batch(
        *(torch.zeros((2, 1), dtype=torch.long) for _ in range(4)),
        word_mask=torch.ones((2, 1), dtype=torch.bool),
        shape_ids=torch.zeros((2, 1), dtype=torch.long),
        spans=torch.zeros((0, 2), dtype=torch.long),
        span_mask=torch.zeros((2, 0), dtype=torch.bool),
        has_image=torch.zeros(2, dtype=torch.bool),
    )
    features = ImageInput(
        pooled=torch.empty(4, device="meta"), regions=torch.empty(9, 4, device="meta")
    )
    add_images(batch, [features, None])
    assert batch.image_pooled is not None and batch.image_regions is not None
    assert batch.image_pooled.device.type == "meta"
    assert batch.image_regions.device.type == "meta"
    assert batch.has_image.tolist() == [True, False]


def test_the_bio_tagger_is_given_no_spans(tmp_path: Path) -> None:
    """The span suggester follows the labelling scheme: a model that tags words gets no
    candidate spans (and no span labels), a span model every span up to its width."""
    from smner.data.types import Entity
    from smner.encoders.text import load_tokenizer
    from smner.model import build_model
    from tests.tiny import make_image_encoder, make_text_encoder, tiny_config

    text, image = make_text_encoder(tmp_path / "text"), make_image_encoder(tmp_path / "image")
    words = [["George", "visited", "Paris"], ["Apple"]]
    gold = [[Entity(0, 1, "PER"), Entity(2, 3, "LOC")], [Entity(0, 1, "ORG")]]
    for kind, spans in (("bio-tagger", 0), ("smner", 6)):
        config = build_model(tiny_config(text, image, type=kind)).config
        processor = Processor.for_model(config, load_tokenizer(text))
        batch = processor(words, gold)
        assert tuple(batch.spans.shape) == (spans, 2), kind
        assert tuple(batch.span_mask.shape) == (2, spans), kind
    assert batch.token_labels is None
