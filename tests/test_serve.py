"""The HTTP API: predictions, limits on hostile input, micro-batching, schema and command."""

from __future__ import annotations

import argparse
import asyncio
import base64
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from smner.commands import serve as serve_command
from smner.data.posts import PostInput
from smner.data.predictions import PostPrediction
from smner.predict.predictor import Predictor
from smner.serve.app import STATIC_DIR, create_app
from smner.serve.batcher import BatcherClosed, BatcherOverloaded, MicroBatcher
from smner.serve.errors import ApiError
from smner.serve.images import PixelBudget
from smner.serve.middleware import BodyLimit
from smner.serve.settings import ServeSettings

POST = "George visited Paris today"
UNICODE_POST = "Ünïcödé 😀 George visited Paris today 🇫🇷"


@pytest.fixture(scope="module")
def image_bytes(trained_run: dict[str, Path]) -> bytes:
    return (trained_run["images"] / "0.jpg").read_bytes()


@pytest.fixture(scope="module")
def client(trained_predictor: Predictor) -> Iterator[TestClient]:
    app = create_app(trained_predictor, ServeSettings())
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def entity_pairs(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(e["text"], e["type"]) for e in record["entities"]]


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["error"], str) and "detail" in body
    return body


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` zeros: a few KiB on disk, huge decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


# --- happy paths ---------------------------------------------------------------------------


def test_health_and_model_info(client: TestClient) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/v1/model").json()
    assert info["labels"] == ["LOC", "ORG", "PER"]
    assert info["type"] == "smner" and info["grid"] == [7, 7]
    assert info["max_span_width"] == 3
    assert (info["use_image"], info["use_ib"], info["use_cross_attention"]) == (True, True, True)
    assert info["version"] == __import__("smner").__version__
    assert info["text_encoder"] == "text-encoder"  # a local path shows no server directories
    assert info["limits"]["max_text_chars"] == 2000


def test_model_info_of_a_bio_tagger_claims_no_alignment(tmp_path: Path) -> None:
    """The tagger has neither alignment module nor attention maps, whatever its config says."""
    from smner.encoders.text import load_tokenizer
    from smner.model import build_model
    from tests.tiny import make_image_encoder, make_text_encoder, tiny_config

    text, image = make_text_encoder(tmp_path / "text"), make_image_encoder(tmp_path / "image")
    tagger = build_model(tiny_config(text, image, type="bio-tagger", use_image=True))
    tagger.save_pretrained(tmp_path / "tagger", tokenizer=load_tokenizer(text))
    app = create_app(Predictor.from_pretrained(tmp_path / "tagger"), ServeSettings())
    with TestClient(app) as tagger_client:
        info = tagger_client.get("/v1/model").json()
    assert info["type"] == "bio-tagger" and info["use_image"] is True
    assert (info["use_ib"], info["use_cross_attention"], info["grid"]) == (False, False, None)


def test_a_grounding_model_serves_each_entity_s_box_in_pixels(
    trained_grounding_run: dict[str, Path], image_bytes: bytes
) -> None:
    """Boxes come in pixels of the posted image: the same numbers as the Python API's, and
    for a post without an image no entity has a box or a box score."""
    root = trained_grounding_run["root"]
    predictor = Predictor.from_pretrained(trained_grounding_run["model"])
    with TestClient(create_app(predictor, ServeSettings())) as grounded:
        assert grounded.get("/v1/model").json()["grounding"] is True
        record = grounded.post("/v1/predict", json={"text": POST, "image": b64(image_bytes)}).json()
        assert record["entities"], record
        expected = predictor.predict(POST, image=root / "images" / "0.jpg").to_dict()
        for served, direct in zip(record["entities"], expected["entities"], strict=True):
            assert 0.0 <= served["box_score"] <= 1.0
            assert served["box_score"] == pytest.approx(direct["box_score"], abs=1e-5)
            if served["box"] is not None:
                assert served["box"] == pytest.approx(direct["box"], abs=0.11)
                x0, y0, x1, y1 = served["box"]
                assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
        text_only = grounded.post("/v1/predict", json={"text": POST}).json()
        assert all(e["box"] is None and e["box_score"] is None for e in text_only["entities"])


def test_json_prediction_with_base64_image(client: TestClient, image_bytes: bytes) -> None:
    response = client.post("/v1/predict", json={"text": POST, "image": b64(image_bytes)})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["tokens"] == POST.split() and record["image_status"] == "ok"
    assert record["grid"] == [7, 7]
    assert entity_pairs(record) == [("George", "PER"), ("Paris", "LOC")]
    paris = record["entities"][1]
    assert (paris["start"], paris["end"], paris["char_start"], paris["char_end"]) == (2, 3, 15, 20)
    assert len(paris["attention"]) == 7 and all(len(row) == 7 for row in paris["attention"])
    assert isinstance(paris["global_attention"], float)
    # a data: URL prefix is accepted too
    with_prefix = {"text": POST, "image": "data:image/jpeg;base64," + b64(image_bytes)}
    assert client.post("/v1/predict", json=with_prefix).json() == record


def test_multipart_prediction(client: TestClient, image_bytes: bytes) -> None:
    files = {"image": ("photo.jpg", image_bytes, "image/jpeg")}
    response = client.post("/v1/predict", data={"text": POST}, files=files)
    assert response.status_code == 200, response.text
    record = response.json()
    assert (
        record == client.post("/v1/predict", json={"text": POST, "image": b64(image_bytes)}).json()
    )
    assert entity_pairs(record) == [("George", "PER"), ("Paris", "LOC")]
    assert record["grid"] == [7, 7] and len(record["entities"][0]["attention"]) == 7


def test_text_only_and_tokens(client: TestClient) -> None:
    record = client.post("/v1/predict", json={"text": POST}).json()
    assert record["image_status"] == "no image" and record["grid"] is None
    assert all(e["attention"] is None for e in record["entities"])
    tokens = client.post("/v1/predict", json={"tokens": POST.split()}).json()
    assert tokens["tokens"] == POST.split()
    # a plain HTML form (urlencoded) works too
    assert entity_pairs(client.post("/v1/predict", data={"text": POST}).json()) == entity_pairs(
        record
    )
    # a browser's empty file input is "no image", not a broken one
    empty = {"image": ("", b"", "application/octet-stream")}
    form = client.post("/v1/predict", data={"text": POST}, files=empty)
    assert form.status_code == 200 and form.json()["image_status"] == "no image"


def test_unicode_text_offsets_are_code_points(client: TestClient, image_bytes: bytes) -> None:
    response = client.post("/v1/predict", json={"text": UNICODE_POST, "image": b64(image_bytes)})
    record = response.json()
    assert response.status_code == 200 and "😀" in record["tokens"]
    # what the tiny model finds there varies between training runs; the offsets must not
    after_emoji = [e for e in record["entities"] if e["char_start"] > UNICODE_POST.index("😀")]
    assert after_emoji, record["entities"]
    for entity in record["entities"]:
        assert UNICODE_POST[entity["char_start"] : entity["char_end"]] == entity["text"]


# --- hostile and invalid input -------------------------------------------------------------


def test_oversized_body_is_413_from_content_length(client: TestClient) -> None:
    body = b'{"text": "' + b"a" * (10 * 2**20) + b'"}'
    response = client.post(
        "/v1/predict", content=body, headers={"content-type": "application/json"}
    )
    assert assert_error(response, 413)["detail"] == {"max_request_bytes": 10 * 2**20}
    assert client.get("/health").status_code == 200


def test_oversized_chunked_body_is_413_while_streaming(trained_predictor: Predictor) -> None:
    app = create_app(trained_predictor, ServeSettings(max_request_bytes=10_000))

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"text": "'
        for _ in range(100):
            yield b"a" * 1000
        yield b'"}'

    with TestClient(app) as small:
        response = small.post(
            "/v1/predict", content=chunks(), headers={"content-type": "application/json"}
        )
        assert_error(response, 413)
        assert small.post("/v1/predict", json={"text": POST}).status_code == 200


def test_declared_oversize_is_refused_before_reading_the_body() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not run")

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"999999999")]}
    asyncio.run(BodyLimit(app, max_bytes=1000)(scope, receive, send))
    assert sent[0]["status"] == 413 and b"request body too large" in sent[1]["body"]


def test_decompression_bomb_is_refused(client: TestClient) -> None:
    bomb = png_header_bomb(20_000, 20_000)
    assert len(bomb) < 100_000
    body = assert_error(client.post("/v1/predict", json={"text": POST, "image": b64(bomb)}), 413)
    assert body["error"] == "image too large"
    files = {"image": ("bomb.png", bomb, "image/png")}
    assert_error(client.post("/v1/predict", data={"text": POST}, files=files), 413)
    assert client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("image", "error"),
    [
        ("corrupt", "not a readable image"),
        ("truncated", "image is truncated"),
        ("not base64 !!", "image is not valid base64"),
        ("https://example.com/photo.jpg", "image is not valid base64"),
        ("", "not a readable image"),
    ],
)
def test_bad_images_are_422(client: TestClient, image_bytes: bytes, image: str, error: str) -> None:
    payload = {
        "corrupt": b64(b"GIF89a this is not really an image"),
        "truncated": b64(image_bytes[: len(image_bytes) // 2]),
    }.get(image, image)
    response = client.post("/v1/predict", json={"text": POST, "image": payload})
    assert assert_error(response, 422)["error"] == error


def test_corrupt_multipart_image_is_422(client: TestClient) -> None:
    files = {"image": ("x.jpg", b"\xff\xd8\xff garbage", "image/jpeg")}
    assert_error(client.post("/v1/predict", data={"text": POST}, files=files), 422)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "invalid request"),  # missing fields
        ({"image": "aGVsbG8="}, "invalid request"),
        ({"text": ""}, "empty text"),
        ({"text": "   \n "}, "empty text"),
        ({"tokens": []}, "empty text"),
        ({"tokens": ["George", " "]}, "invalid request"),
        ({"text": "x" * 2001}, "text too long"),
        ({"tokens": ["x" * 1000, "y" * 1001]}, "text too long"),
        ({"text": " ".join(["a"] * 250)}, "too many tokens"),
        ({"tokens": ["a"] * 250}, "too many tokens"),
        ({"text": POST, "tokens": POST.split()}, "invalid request"),  # both
        ({"text": 5}, "invalid request"),  # wrong types
        ({"text": ["George"]}, "invalid request"),
        ({"tokens": "George visited"}, "invalid request"),
        ({"tokens": ["George", 3]}, "invalid request"),
        ({"text": POST, "image": 12}, "invalid request"),
        ({"text": POST, "colour": "red"}, "invalid request"),  # unknown field
        (["George"], "invalid request"),
        ("George", "invalid request"),
    ],
)
def test_invalid_json_posts_are_422(client: TestClient, body: Any, error: str) -> None:
    """Each is refused by its own check, before the post reaches the model's queue."""
    assert assert_error(client.post("/v1/predict", json=body), 422)["error"] == error


def test_invalid_bodies_and_forms(client: TestClient, image_bytes: bytes) -> None:
    json_type = {"content-type": "application/json"}
    assert_error(client.post("/v1/predict", content=b'{"text": ', headers=json_type), 422)
    assert_error(client.post("/v1/predict", content=b"\xff\xfe", headers=json_type), 422)
    text_type = {"content-type": "text/plain"}
    assert_error(client.post("/v1/predict", content=POST.encode(), headers=text_type), 415)
    image = {"image": ("0.jpg", image_bytes, "image/jpeg")}
    assert_error(client.post("/v1/predict", files=image), 422)  # no text
    as_file = {"text": ("t.txt", POST.encode(), "text/plain")}
    assert_error(client.post("/v1/predict", files=as_file), 422)
    assert_error(client.post("/v1/predict", data={"text": POST, "image": "aGVsbG8="}), 422)
    assert_error(client.post("/v1/predict", data={"text": POST, "lang": "en"}), 422)
    assert_error(client.post("/v1/predict", data={"text": "x" * 9000}), 422)
    two_images = [("image", ("a.jpg", image_bytes, "image/jpeg"))] * 2
    assert_error(client.post("/v1/predict", data={"text": POST}, files=two_images), 422)
    broken = {"content-type": "multipart/form-data; boundary=xyz"}
    assert_error(client.post("/v1/predict", content=b"--xyz\r\nnonsense", headers=broken), 422)
    assert_error(client.get("/v1/predict"), 405)
    assert_error(client.get("/no/such/page"), 404)
    assert client.post("/v1/predict", json={"text": POST}).status_code == 200


def test_an_unexpected_failure_is_a_json_500(trained_predictor: Predictor) -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            return getattr(trained_predictor, name)

        def predict_many(self, posts: list[PostInput], batch_size: int = 32) -> list[Any]:
            raise RuntimeError("boom")

    app = create_app(Broken(), ServeSettings())  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as broken:
        body = assert_error(broken.post("/v1/predict", json={"text": POST}), 500)
        assert body["error"] == "internal server error" and "boom" not in str(body)
        assert broken.get("/health").status_code == 200


# --- micro-batching ------------------------------------------------------------------------


def test_concurrent_requests_share_model_calls(
    trained_predictor: Predictor, image_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = trained_predictor
    sizes: list[int] = []
    original = predictor.predict_many

    def spy(posts: list[PostInput], batch_size: int = 32) -> list[PostPrediction]:
        sizes.append(len(posts))
        time.sleep(0.02)  # a slower model: requests pile up while it runs
        return original(posts, batch_size)

    monkeypatch.setattr(predictor, "predict_many", spy)
    app = create_app(predictor, ServeSettings(max_batch=16, batch_wait_ms=20))
    texts = [" ".join([POST, *["today"] * i]) for i in range(16)]
    bodies = [
        {"text": t, **({"image": b64(image_bytes)} if i % 2 == 0 else {})}
        for i, t in enumerate(texts)
    ]

    async def fire() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://smner") as http:
            return await asyncio.gather(*(http.post("/v1/predict", json=b) for b in bodies))

    try:
        responses = asyncio.run(fire())
    finally:
        app.state.batcher.close()
    assert sum(sizes) == 16 and max(sizes) > 1, sizes
    for i, (text, response) in enumerate(zip(texts, responses, strict=True)):
        assert response.status_code == 200, response.text
        record = response.json()
        alone = original([PostInput(text, image=image_bytes if i % 2 == 0 else None)])[0]
        assert record["tokens"] == text.split() == alone.tokens
        assert record["image_status"] == ("ok" if i % 2 == 0 else "no image")
        assert entity_pairs(record) == [(m.text, m.type) for m in alone.entities]
        scores = [e["score"] for e in record["entities"]]
        assert scores == pytest.approx([m.score for m in alone.entities], abs=1e-4)


def test_batcher_isolates_a_failing_item() -> None:
    calls: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        calls.append(list(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]

    batcher: MicroBatcher[str, str] = MicroBatcher(run, max_batch=8, max_wait_s=0.2)
    futures = [batcher.submit(item) for item in ["a", "bad", "c"]]
    assert futures[0].result(5) == "A" and futures[2].result(5) == "C"
    with pytest.raises(ValueError, match="bad item"):
        futures[1].result(5)
    assert calls[0] == ["a", "bad", "c"]  # one batch first, then one by one
    batcher.close()
    with pytest.raises(BatcherClosed):
        batcher.submit("d")


def test_batcher_refuses_work_beyond_max_pending() -> None:
    release = threading.Event()

    def slow(items: list[int]) -> list[int]:
        release.wait(5)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(slow, max_batch=1, max_wait_s=0, max_pending=1)
    first = batcher.submit(1)
    deadline = time.monotonic() + 5
    while batcher._queue.qsize() and time.monotonic() < deadline:  # the worker took item 1
        time.sleep(0.001)
    second = batcher.submit(2)
    with pytest.raises(BatcherOverloaded):
        batcher.submit(3)
    release.set()
    assert (first.result(5), second.result(5)) == (1, 2)
    batcher.close()


def test_pixel_budget_bounds_waiting_images() -> None:
    budget = PixelBudget(100)
    with budget.hold(60):
        with pytest.raises(ApiError) as refused, budget.hold(50):
            pass
        assert refused.value.status == 503
        with budget.hold(40):
            assert budget.used == 100
    assert budget.used == 0


# --- schema, page and command --------------------------------------------------------------


def test_openapi_describes_predict(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"]["/v1/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert operation["requestBody"]["required"] is True
    reference = content["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert set(request["properties"]) == {"text", "tokens", "image", "images"}
    assert content["multipart/form-data"]["schema"]["required"] == ["text"]
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    response = schema["components"]["schemas"][ok.rsplit("/", 1)[1]]
    assert {"tokens", "image_status", "entities", "grid"} <= set(response["properties"])
    assert {"413", "422"} <= set(operation["responses"])
    assert {"/health", "/v1/model"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 404  # Swagger UI would need a CDN


def test_page_is_served_and_self_contained(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert '<textarea id="post-text"' in page.text and 'aria-live="polite"' in page.text
    for name in ("index.html", "app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
        source = (STATIC_DIR / name).read_text(encoding="utf-8")
        assert "http://" not in source and "https://" not in source, name


def test_serve_command_wires_the_app(
    trained_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    captured: dict[str, Any] = {}

    def fake_run(app: FastAPI, **options: Any) -> None:
        captured.update(options, app=app)

    monkeypatch.setattr("uvicorn.run", fake_run)
    parser = argparse.ArgumentParser(prog="smner")
    serve_command.register(parser.add_subparsers(dest="verb"))
    model = str(trained_model_dir)
    args = parser.parse_args(["serve", "--model", model, "--port", "8123", "--max-batch", "4"])
    assert args.handler(args) == 0
    assert (captured["host"], captured["port"]) == ("127.0.0.1", 8123)
    assert captured["app"].state.batcher.max_batch == 4
    with TestClient(captured["app"], base_url="http://127.0.0.1:8123") as served:
        assert served.get("/v1/model").json()["labels"] == ["LOC", "ORG", "PER"]
    with TestClient(captured["app"], base_url="http://attacker.example") as rebound:
        assert rebound.get("/v1/model").status_code == 400  # the Host header is checked
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--help"])
    assert "/v1/predict" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--model", model, "--max-batch", "0"])
