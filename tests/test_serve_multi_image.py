"""The HTTP API and the page with posts of several images: the request forms (JSON ``images``,
multipart ``images`` parts), their limits (images a post, pixels together, the pending
budget), and the answer (a status per image, each entity's image and that image's crop)."""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from smner.data.predictions import Mention
from smner.errors import SmnerError
from smner.predict.predictor import Predictor
from smner.serve.app import STATIC_DIR, create_app
from smner.serve.settings import ServeSettings
from tests.tiny import solid_image, tiny_model

POST = "George visited Paris"
WIDE = (120, 80)  # an image of another size than the fixture photos (64 x 64)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def assert_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body["error"], str) and "detail" in body
    return body


def eager_predictor(encoders: tuple[Path, Path], max_images: int) -> Predictor:
    """An untrained tiny grounding model that calls every span an entity and gives each a
    box, so that there are entities, image indices and boxes to check."""
    model, processor = tiny_model(
        encoders, max_images=max_images, grounding=True, grounding_threshold=0.0
    )
    with torch.no_grad():
        model.classifier[-1].bias[1] = 50.0
    return Predictor(model, processor)


@pytest.fixture(scope="module")
def predictor(encoders: tuple[Path, Path]) -> Predictor:
    return eager_predictor(encoders, max_images=3)


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def photos(post_images: Path) -> dict[str, bytes]:
    return {
        "square": (post_images / "0.jpg").read_bytes(),
        "other": (post_images / "3.jpg").read_bytes(),
        "wide": png(solid_image((30, 60, 200), 120).resize(WIDE)),
    }


def parts(*images: bytes, name: str = "images") -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart file parts (the server reads the format from the bytes, not the name)."""
    return [(name, (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(images)]


# --- the answer ------------------------------------------------------------------------------


def test_json_images_get_a_status_each_and_every_entity_an_image_of_the_list(
    client: TestClient, predictor: Predictor, photos: dict[str, bytes]
) -> None:
    images = [photos["square"], photos["wide"]]
    response = client.post("/v1/predict", json={"text": POST, "images": [b64(i) for i in images]})
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["image_statuses"] == ["ok", "ok"] and record["image_status"] == "ok"
    assert record["grid"] == [7, 7] and record["crop_box"] is None
    sizes = [(64, 64), WIDE]
    assert record["crop_boxes"] == [list(predictor.processor.crop_box(*s)) for s in sizes]
    # the seeded tiny model grounds entities in both images, so both are checked below
    assert {e["image_index"] for e in record["entities"]} == {0, 1}, record["entities"]
    for entity in record["entities"]:
        width, height = sizes[entity["image_index"]]
        assert len(entity["attention"]) == 7 and all(len(row) == 7 for row in entity["attention"])
        x0, y0, x1, y1 = entity["box"]  # in the pixels of its own image
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    direct = predictor.predict(POST, images=images)  # the Python API, for the same post
    served = [(e["text"], e["type"], e["image_index"]) for e in record["entities"]]
    assert served == [(m.text, m.type, m.image_index) for m in direct.entities]


def test_multipart_images_parts_are_the_post_s_list_in_their_order(
    client: TestClient, photos: dict[str, bytes]
) -> None:
    images = [photos["wide"], photos["square"]]
    form = client.post("/v1/predict", data={"text": POST}, files=parts(*images))
    assert form.status_code == 200, form.text
    as_json = client.post("/v1/predict", json={"text": POST, "images": [b64(i) for i in images]})
    assert form.json() == as_json.json()
    assert len(form.json()["image_statuses"]) == 2
    assert form.json()["crop_boxes"][0] != form.json()["crop_boxes"][1]  # wide, then square
    # one 'images' part is a list of one; a multiple file input with nothing chosen is none
    one = client.post("/v1/predict", data={"text": POST}, files=parts(photos["square"]))
    assert one.json()["image_statuses"] == ["ok"] and len(one.json()["crop_boxes"]) == 1
    empty = [("images", ("", b"", "application/octet-stream"))]
    nothing = client.post("/v1/predict", data={"text": POST}, files=empty).json()
    assert nothing["image_status"] == "no image" and "image_statuses" not in nothing


def test_an_empty_list_of_images_is_a_post_without_one(client: TestClient) -> None:
    record = client.post("/v1/predict", json={"text": POST, "images": []}).json()
    assert record["image_status"] == "no image"
    assert record["image_statuses"] == [] and record["crop_boxes"] == []
    assert record["grid"] is None and all(e["image_index"] is None for e in record["entities"])


def test_a_one_image_answer_keeps_its_shape(
    client: TestClient, predictor: Predictor, photos: dict[str, bytes]
) -> None:
    """No list keys in the answer to a post of one image (or none), by JSON or multipart; a
    list of one image gets them, with the same entities."""
    one = client.post("/v1/predict", json={"text": POST, "image": b64(photos["wide"])}).json()
    assert set(one) == {"tokens", "image_status", "entities", "grid", "crop_box"}
    assert one["crop_box"] == list(predictor.processor.crop_box(*WIDE))
    mention_keys = {f.name for f in dataclasses.fields(Mention)}
    assert one["entities"] and all(set(e) == mention_keys for e in one["entities"])
    assert all(e["image_index"] is None for e in one["entities"])
    files = parts(photos["wide"], name="image")
    assert client.post("/v1/predict", data={"text": POST}, files=files).json() == one
    none = client.post("/v1/predict", json={"text": POST}).json()
    assert set(none) == set(one) and none["crop_box"] is None and none["grid"] is None
    listed = client.post("/v1/predict", json={"text": POST, "images": [b64(photos["wide"])]})
    listed_record = listed.json()
    assert listed_record["image_statuses"] == ["ok"]
    assert listed_record["crop_boxes"] == [one["crop_box"]]
    pairs = [(e["text"], e["type"]) for e in one["entities"]]
    assert [(e["text"], e["type"]) for e in listed_record["entities"]] == pairs
    assert all(e["image_index"] == 0 for e in listed_record["entities"])


# --- what is refused -------------------------------------------------------------------------


def test_image_and_images_together_are_refused(
    client: TestClient, photos: dict[str, bytes]
) -> None:
    body = {"text": POST, "image": b64(photos["square"]), "images": [b64(photos["square"])]}
    refused = assert_error(client.post("/v1/predict", json=body), 422)
    assert "'image'" in refused["detail"][0]["msg"] and "not both" in refused["detail"][0]["msg"]
    files = parts(photos["square"], name="image") + parts(photos["wide"])
    refused = assert_error(client.post("/v1/predict", data={"text": POST}, files=files), 422)
    assert "not both" in refused["detail"]
    # several 'image' parts are not a list: the error says what to send instead
    files = parts(photos["square"], photos["wide"], name="image")
    refused = assert_error(client.post("/v1/predict", data={"text": POST}, files=files), 422)
    assert "'images'" in refused["detail"]


def test_more_images_than_the_cap_are_refused_naming_it(
    client: TestClient, predictor: Predictor, photos: dict[str, bytes]
) -> None:
    """The cap is the server's max_images_per_post (4), lowered to the model's max_images
    (3); the answer says which, by JSON and by multipart."""
    assert client.get("/v1/model").json()["limits"]["max_images_per_post"] == 3
    four = [b64(photos["square"])] * 4
    refused = assert_error(client.post("/v1/predict", json={"text": POST, "images": four}), 422)
    expected = {"images": 4, "max_images": 3, "set_by": "model.max_images"}
    assert refused == {"error": "too many images", "detail": expected}
    files = parts(*[photos["square"]] * 4)
    assert client.post("/v1/predict", data={"text": POST}, files=files).json() == refused
    many = parts(*[photos["square"]] * 9)  # the parse stops at the first part past the cap
    refused = assert_error(client.post("/v1/predict", data={"text": POST}, files=many), 422)
    assert refused["detail"] == {"max_images": 3, "set_by": "model.max_images"}

    with TestClient(create_app(predictor, ServeSettings(max_images_per_post=2))) as two:
        assert two.get("/v1/model").json()["limits"]["max_images_per_post"] == 2
        three = [b64(photos["square"])] * 3
        refused = assert_error(two.post("/v1/predict", json={"text": POST, "images": three}), 422)
        assert refused["detail"] == {"images": 3, "max_images": 2, "set_by": "max_images_per_post"}
        assert two.post("/v1/predict", json={"text": POST, "images": three[:2]}).status_code == 200


def test_a_one_image_model_refuses_a_list_of_several(
    encoders: tuple[Path, Path], photos: dict[str, bytes]
) -> None:
    one_image = eager_predictor(encoders, max_images=1)
    with TestClient(create_app(one_image)) as client:
        assert client.get("/v1/model").json()["limits"]["max_images_per_post"] == 1
        two = [b64(photos["square"]), b64(photos["wide"])]
        refused = assert_error(client.post("/v1/predict", json={"text": POST, "images": two}), 422)
        assert refused["detail"] == {"images": 2, "max_images": 1, "set_by": "model.max_images"}
        files = parts(photos["square"], photos["wide"])
        assert client.post("/v1/predict", data={"text": POST}, files=files).json() == refused
        listed = client.post("/v1/predict", json={"text": POST, "images": two[:1]})
        assert listed.status_code == 200 and listed.json()["image_statuses"] == ["ok"]
        image = client.post("/v1/predict", json={"text": POST, "image": two[0]})
        assert image.status_code == 200 and "image_statuses" not in image.json()


def test_an_exported_folder_takes_one_image_a_post(
    predictor: Predictor, photos: dict[str, bytes], tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    from smner.predict.onnx_export import export_onnx

    predictor.model.save_pretrained(tmp_path / "model", processor=predictor.processor)
    export_onnx(tmp_path / "model", tmp_path / "onnx")
    with TestClient(create_app(Predictor.from_pretrained(tmp_path / "onnx"))) as client:
        assert client.get("/v1/model").json()["limits"]["max_images_per_post"] == 1
        two = [b64(photos["square"])] * 2
        refused = assert_error(client.post("/v1/predict", json={"text": POST, "images": two}), 422)
        assert refused["detail"]["set_by"] == "the ONNX backend takes one image a post for now"
        listed = client.post("/v1/predict", json={"text": POST, "images": two[:1]})
        assert listed.status_code == 200 and listed.json()["image_statuses"] == ["ok"]


def test_pixels_over_the_limits_are_refused_naming_the_image(
    predictor: Predictor, photos: dict[str, bytes]
) -> None:
    """Each image within max_image_pixels, and the post's images together within
    max_post_pixels, both checked from the headers; the error names the image."""
    settings = ServeSettings(max_image_pixels=6_000, max_post_pixels=9_000)
    square = b64(photos["square"])  # 4096 pixels; "wide" has 9600
    app = create_app(predictor, settings)
    with TestClient(app) as client:
        limits = client.get("/v1/model").json()["limits"]
        assert (limits["max_image_pixels"], limits["max_post_pixels"]) == (6_000, 9_000)
        ok = client.post("/v1/predict", json={"text": POST, "images": [square, square]})
        assert ok.status_code == 200, ok.text  # 8192 pixels together
        three = {"text": POST, "images": [square, square, square]}
        refused = assert_error(client.post("/v1/predict", json=three), 413)
        assert refused == {
            "error": "images too large together",
            "detail": {"image": 2, "pixels": 3 * 4096, "max_post_pixels": 9_000},
        }
        files = parts(photos["square"], photos["wide"])
        refused = assert_error(client.post("/v1/predict", data={"text": POST}, files=files), 413)
        assert refused["error"] == "image too large" and refused["detail"]["image"] == 1
        assert refused["detail"]["max_pixels"] == 6_000
        assert app.state.pixel_budget.used == 0


def test_an_image_that_cannot_be_used_is_named(
    client: TestClient, photos: dict[str, bytes]
) -> None:
    good, bad = b64(photos["square"]), b64(b"GIF89a this is not really an image")
    body = {"text": POST, "images": [good, bad]}
    refused = assert_error(client.post("/v1/predict", json=body), 422)
    assert refused["error"] == "not a readable image" and refused["detail"]["image"] == 1
    assert "JPEG" in refused["detail"]["formats"]
    body = {"text": POST, "images": [good, "not base64 !!"]}
    refused = assert_error(client.post("/v1/predict", json=body), 422)
    assert refused["error"] == "image is not valid base64" and refused["detail"]["image"] == 1
    truncated = photos["other"][: len(photos["other"]) // 2]
    files = parts(truncated, photos["square"])
    refused = assert_error(client.post("/v1/predict", data={"text": POST}, files=files), 422)
    assert refused == {"error": "image is truncated", "detail": {"image": 0}}
    body = {"text": POST, "images": [good, 5]}
    assert_error(client.post("/v1/predict", json=body), 422)


# --- the pending-pixel budget ----------------------------------------------------------------


class Watching:
    """A predictor that notes the budget's pixels held while the model runs."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.seen: list[int] = []
        self.app: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def predict_many(self, posts: list[Any], batch_size: int = 32) -> list[Any]:
        self.seen.append(self.app.state.pixel_budget.used)
        return self.inner.predict_many(posts, batch_size)


def test_every_image_of_a_post_is_held_in_the_pending_budget(
    predictor: Predictor, photos: dict[str, bytes]
) -> None:
    watching = Watching(predictor)
    app = create_app(watching)  # type: ignore[arg-type]
    watching.app = app
    budget = app.state.pixel_budget
    images = [b64(photos["square"]), b64(photos["wide"]), b64(photos["other"])]
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/predict", json={"text": POST, "images": images}).status_code == 200
        assert watching.seen == [64 * 64 + WIDE[0] * WIDE[1] + 64 * 64]
        assert budget.used == 0
        # a failing image gives back what the images before it held
        bad = [*images[:2], b64(b"not an image")]
        assert_error(client.post("/v1/predict", json={"text": POST, "images": bad}), 422)
        assert budget.used == 0
        # a budget with room for the first image only: 503, and nothing is kept
        budget.used = budget.limit - 5_000
        busy = client.post("/v1/predict", json={"text": POST, "images": images})
        assert assert_error(busy, 503)["error"] == "server busy"
        assert busy.headers["retry-after"] == "1"
        assert budget.used == budget.limit - 5_000
        budget.used = 0
        assert len(watching.seen) == 1


# --- settings, schema and page ---------------------------------------------------------------


def test_settings_of_images_a_post() -> None:
    settings = ServeSettings()
    assert (settings.max_images_per_post, settings.max_post_pixels) == (4, None)
    assert settings.post_pixel_limit == 2 * settings.max_image_pixels
    small = ServeSettings(max_image_pixels=10_000, max_pending_pixels=15_000)
    assert small.post_pixel_limit == 15_000  # never more than the pending budget
    for wrong in (
        {"max_images_per_post": 0},
        {"max_images_per_post": 65},
        {"max_post_pixels": 100},  # under max_image_pixels
        {"max_post_pixels": 300_000_000},  # over max_pending_pixels
    ):
        with pytest.raises(SmnerError, match="max_"):
            ServeSettings(**wrong)  # type: ignore[arg-type]


def test_openapi_describes_images(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["PredictRequest"]["properties"]["images"]["anyOf"][0]["type"] == "array"
    content = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    form = content["multipart/form-data"]["schema"]["properties"]
    assert form["images"]["type"] == "array" and form["images"]["items"]["format"] == "binary"
    assert {"image_statuses", "crop_boxes"} <= set(components["PredictResponse"]["properties"])
    limits = components["Limits"]["properties"]
    assert {"max_images_per_post", "max_post_pixels"} <= set(limits)


def test_the_page_takes_several_images(client: TestClient) -> None:
    page = client.get("/").text
    start = page.index('<input id="post-image"')
    file_input = page[start : page.index(">", start)]
    assert " multiple" in file_input and 'name="images"' in file_input
    assert 'id="previews"' in page and 'id="preview"' in page
    script = (STATIC_DIR / "app.js").read_text(encoding="utf-8")
    for needle in ("body.images", "image_index", "crop_boxes", "image_statuses"):
        assert needle in script, needle
    assert "max_images_per_post" in script


@pytest.mark.integration  # a browser
def test_the_page_draws_each_entity_over_its_own_image(
    predictor: Predictor, photos: dict[str, bytes], tmp_path: Path
) -> None:
    # Skips, as that module does, without Chromium or Playwright.
    from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, local_page, serving, sync_api

    square, wide = tmp_path / "square.jpg", tmp_path / "wide.png"
    square.write_bytes(photos["square"])
    wide.write_bytes(photos["wide"])
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        with serving(predictor) as url, local_page(browser, url) as (page, problems):
            page.goto(url + "/")
            expect(page.locator("#max-images")).to_have_text("; up to 3")
            page.locator("#post-text").fill(POST)
            page.locator("#post-image").set_input_files([square, wide])
            expect(page.locator("#previews img:visible")).to_have_count(2)
            with page.expect_response("**/v1/predict") as answer:
                page.get_by_role("button", name="Predict").click()
            record = answer.value.json()
            assert record["image_statuses"] == ["ok", "ok"]
            expect(page.locator("#image-status")).to_have_text("Images: 1. ok; 2. ok.")
            assert {e["image_index"] for e in record["entities"]} == {0, 1}
            heights = [320, round(WIDE[1] * 320 / WIDE[0])]  # canvases 320 wide
            for index, entity in enumerate(record["entities"]):
                at = entity["image_index"]
                page.locator(f"#entity-list button[data-index='{index}']").click()
                expect(page.locator("#heatmap")).to_be_visible()
                expect(page.locator("#explain-caption")).to_contain_text(f"image {at + 1} of 2")
                size = page.evaluate("[heatmap.width, heatmap.height]")
                assert size == [320, heights[at]], (entity["text"], at, size)
            page.locator("#post-image").set_input_files([square, wide, square, wide])
            expect(page.get_by_role("alert")).to_contain_text("at most 3 images a post")
            assert problems == []
        browser.close()
