"""The web page end to end in headless Chromium: post + image in, entities and heatmap out."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from smner.predict.predictor import Predictor
from smner.serve.app import create_app
from smner.serve.settings import ServeSettings
from tests.test_serve import POST, UNICODE_POST

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.is_file():
    pytest.skip(
        "the browser test needs Debian's chromium at /usr/bin/chromium "
        "(apt-get install chromium; `playwright install` cannot download browsers here)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="needs the playwright package")

pytestmark = pytest.mark.integration  # a browser, and a trained model behind the server

CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Pixels of the heatmap canvas: how many are drawn, and how many differ from the bare image.
CANVAS_PIXELS = """() => {
  const canvas = document.getElementById("heatmap");
  const drawn = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const plain = document.createElement("canvas");
  plain.width = canvas.width;
  plain.height = canvas.height;
  const context = plain.getContext("2d");
  context.drawImage(document.getElementById("preview"), 0, 0, canvas.width, canvas.height);
  const bare = context.getImageData(0, 0, canvas.width, canvas.height).data;
  let opaque = 0, changed = 0;
  for (let i = 0; i < drawn.length; i += 4) {
    if (drawn[i + 3] > 0 && drawn[i] + drawn[i + 1] + drawn[i + 2] > 0) opaque += 1;
    if (Math.abs(drawn[i] - bare[i]) + Math.abs(drawn[i + 1] - bare[i + 1]) > 8) changed += 1;
  }
  return {width: canvas.width, height: canvas.height, opaque, changed};
}"""


@contextlib.contextmanager
def serving(predictor: Predictor) -> Iterator[str]:
    """uvicorn in a thread, on a socket bound to a free port (no race for the port)."""
    app = create_app(predictor, ServeSettings())
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@contextlib.contextmanager
def local_page(browser: Any, server_url: str) -> Iterator[tuple[Any, list[str]]]:
    """A page that may reach only ``server_url``; other requests are recorded and refused."""
    problems: list[str] = []
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def only_local(route: Any) -> None:
        if route.request.url.startswith(server_url):
            route.continue_()
        else:
            problems.append(f"external request: {route.request.url}")
            route.abort()

    page.route("**/*", only_local)
    try:
        yield page, problems
    finally:
        page.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server_url(trained_model_dir: Path) -> Iterator[str]:
    with serving(Predictor.from_pretrained(trained_model_dir)) as url:
        yield url


@pytest.fixture(scope="module")
def browser_page(browser: Any, server_url: str) -> Iterator[tuple[Any, list[str]]]:
    with local_page(browser, server_url) as page_and_problems:
        yield page_and_problems


def mark_texts(page: Any) -> list[tuple[str, str]]:
    """(surface, type) of each highlighted entity, in text order."""
    return page.eval_on_selector_all(
        "#highlighted .entity",
        "nodes => nodes.map(n => [n.firstChild.textContent, n.dataset.type])",
    )


def test_predict_highlight_and_heatmap(
    browser_page: tuple[Any, list[str]], server_url: str, trained_run: dict[str, Path]
) -> None:
    page, problems = browser_page
    expect = sync_api.expect
    page.goto(server_url + "/")
    expect(page.locator("#model-info")).to_contain_text("LOC, ORG, PER")

    page.locator("#post-text").fill(POST)
    page.locator("#post-image").set_input_files(trained_run["images"] / "0.jpg")
    expect(page.locator("#preview")).to_be_visible()
    page.get_by_role("button", name="Predict").click()

    expect(page.locator("#status")).to_have_text("Found 2 entities.")
    assert [tuple(pair) for pair in mark_texts(page)] == [("George", "PER"), ("Paris", "LOC")]
    expect(page.locator("#entity-list li")).to_have_count(2)
    expect(page.locator("#legend li")).to_have_text(["LOC", "ORG", "PER"])
    colours = page.eval_on_selector_all(
        "#highlighted .entity", "nodes => nodes.map(n => getComputedStyle(n).backgroundColor)"
    )
    assert len(set(colours)) == 2, colours  # one colour per type

    page.locator("#highlighted .entity[data-type='LOC']").click()
    expect(page.locator("#heatmap")).to_be_visible()
    expect(page.locator("#explain-caption")).to_contain_text("“Paris” (LOC)")
    expect(page.locator("#explain-caption")).to_contain_text("7×7")
    pixels = page.evaluate(CANVAS_PIXELS)
    assert pixels["width"] > 0 and pixels["height"] > 0
    assert pixels["opaque"] > 0 and pixels["changed"] > 0, pixels
    pressed = page.locator("#entity-list button[aria-pressed='true']")
    expect(pressed).to_have_count(1)
    expect(pressed).to_contain_text("Paris")

    # Offsets are code points: an emoji before an entity must not shift its highlight.
    # Whatever the tiny model finds there, each highlight shows exactly the code points its
    # offsets name (UTF-16 indexing would shift every entity after the emoji by one).
    page.locator("#post-text").fill(UNICODE_POST)
    with page.expect_response("**/v1/predict") as answer:
        page.get_by_role("button", name="Predict").click()
    # (the new post is on the page; an entity's label may follow any word, so no two words)
    expect(page.locator("#highlighted")).to_contain_text("😀")
    entities = answer.value.json()["entities"]
    after_emoji = [e for e in entities if e["char_start"] >= UNICODE_POST.index("😀")]
    assert after_emoji, entities
    expected = [[UNICODE_POST[e["char_start"] : e["char_end"]], e["type"]] for e in entities]
    assert mark_texts(page) == expected

    # A server error is shown, and the page keeps working.
    bad = {"name": "bad.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"}
    page.locator("#post-image").set_input_files(bad)
    page.get_by_role("button", name="Predict").click()
    expect(page.get_by_role("alert")).to_contain_text("not a readable image")
    assert problems == []


# Tinted (heat-coloured) pixels of the heatmap canvas inside and outside a rectangle.
TINT_AROUND = """([x0, y0, x1, y1]) => {
  const canvas = document.getElementById("heatmap");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let inside = 0, outside = 0;
  for (let y = 0; y < canvas.height; y += 1) {
    for (let x = 0; x < canvas.width; x += 1) {
      const i = 4 * (y * canvas.width + x);
      if (data[i] - data[i + 2] <= 30) continue;
      if (x >= x0 && x < x1 && y >= y0 && y < y1) inside += 1; else outside += 1;
    }
  }
  return {inside, outside, width: canvas.width, height: canvas.height};
}"""


def test_heatmap_covers_only_the_crop_the_model_saw(
    browser_page: tuple[Any, list[str]],
    server_url: str,
    trained_run: dict[str, Path],
    tmp_path: Path,
) -> None:
    """On a wide image the model sees only the centre square: the page draws the grid there
    (as `predict --heatmaps` and the alignment metrics do), not over the whole image."""
    from PIL import Image

    page, problems = browser_page
    expect = sync_api.expect
    wide = tmp_path / "wide.png"
    Image.new("RGB", (400, 200), (128, 128, 128)).save(wide)
    page.goto(server_url + "/")
    page.locator("#post-text").fill(POST)
    page.locator("#post-image").set_input_files(wide)
    with page.expect_response("**/v1/predict") as answer:
        page.get_by_role("button", name="Predict").click()
    crop = answer.value.json()["crop_box"]
    preprocessing = Predictor.from_pretrained(trained_run["model"]).model.image.preprocessing
    assert crop == pytest.approx(list(preprocessing.crop_box(400, 200)))
    assert crop[2] - crop[0] < 400 * 0.9  # the centre square of a wide image, not all of it
    page.locator("#highlighted .entity").first.click()
    expect(page.locator("#heatmap")).to_be_visible()
    margin = 2  # smoothing may blur a pixel at the edge
    tint = page.evaluate(
        TINT_AROUND, [crop[0] - margin, crop[1] - margin, crop[2] + margin, crop[3] + margin]
    )
    assert (tint["width"], tint["height"]) == (400, 200)
    assert tint["inside"] > 0 and tint["outside"] == 0, tint
    assert problems == []


def predict_on_page(page: Any, text: str, keyboard: bool = False) -> None:
    """Type ``text`` and submit: by the button, or with Ctrl+Enter in the text box."""
    page.locator("#post-text").fill(text)
    with page.expect_response("**/v1/predict"):
        if keyboard:
            page.locator("#post-text").press("Control+Enter")
        else:
            page.get_by_role("button", name="Predict").click()


def test_ctrl_enter_submits_and_a_post_without_entities_says_so(
    browser_page: tuple[Any, list[str]], server_url: str
) -> None:
    page, problems = browser_page
    expect = sync_api.expect
    page.goto(server_url + "/")
    predict_on_page(page, POST, keyboard=True)
    expect(page.locator("#status")).to_have_text("Found 2 entities.")
    expect(page.locator("#choose-hint")).to_be_visible()

    predict_on_page(page, "the of and", keyboard=True)
    expect(page.locator("#status")).to_have_text("Found 0 entities.")
    expect(page.locator("#no-entities")).to_be_visible()
    expect(page.locator("#choose-hint")).to_be_hidden()
    assert "Choose an entity" not in page.locator("#results").inner_text()
    assert problems == []


def test_an_entity_of_a_post_without_an_image_explains_why_there_is_no_heatmap(
    browser_page: tuple[Any, list[str]], server_url: str
) -> None:
    page, problems = browser_page
    expect = sync_api.expect
    page.goto(server_url + "/")
    predict_on_page(page, POST)
    expect(page.locator("#status")).to_have_text("Found 2 entities.")
    page.locator("#highlighted .entity[data-type='PER']").click()
    caption = page.locator("#explain-caption")
    expect(caption).to_be_visible()
    expect(caption).to_contain_text("No heatmap for “George” (PER)")
    expect(caption).to_contain_text("no image was sent with this post")
    expect(page.locator("#heatmap")).to_be_hidden()
    assert page.evaluate(
        "() => { const r = document.getElementById('explain').getBoundingClientRect();"
        " return r.top < window.innerHeight && r.bottom > 0; }"
    ), "the explanation must be scrolled into view"
    # the list's buttons do the same
    page.locator("#entity-list button", has_text="George").click()
    expect(caption).to_contain_text("No heatmap for “George” (PER)")
    assert problems == []


def test_global_attention_is_said_in_plain_words(
    browser_page: tuple[Any, list[str]], server_url: str, trained_run: dict[str, Path]
) -> None:
    page, problems = browser_page
    expect = sync_api.expect
    page.goto(server_url + "/")
    page.locator("#post-image").set_input_files(trained_run["images"] / "0.jpg")
    predict_on_page(page, POST)
    page.locator("#highlighted .entity[data-type='LOC']").click()
    caption = page.locator("#explain-caption")
    expect(caption).to_contain_text("of its attention went to the image as a whole")
    expect(caption).to_contain_text("to the 7×7 regions drawn here")
    expect(caption).not_to_contain_text("Attention on the whole image:")
    assert problems == []


def test_a_file_that_is_not_an_image_is_refused_in_plain_words(
    browser_page: tuple[Any, list[str]], server_url: str
) -> None:
    page, problems = browser_page
    expect = sync_api.expect
    page.goto(server_url + "/")
    text_file = {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"}
    page.locator("#post-image").set_input_files(text_file)
    expect(page.locator("#preview")).to_be_hidden()
    expect(page.get_by_role("alert")).to_contain_text("“notes.txt” is not an image")
    page.locator("#post-text").fill(POST)
    page.get_by_role("button", name="Predict").click()
    expect(page.get_by_role("alert")).to_contain_text("“notes.txt” is not an image")

    # An image type the server cannot read: the error is in words, not JSON.
    broken = {"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG but not one"}
    page.locator("#post-image").set_input_files(broken)
    expect(page.locator("#preview")).to_be_hidden()
    with page.expect_response("**/v1/predict"):
        page.get_by_role("button", name="Predict").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("not a readable image")
    expect(alert).to_contain_text("formats: ")
    assert not any(mark in alert.inner_text() for mark in '{}[]"'), alert.inner_text()
    assert problems == []


BOX_EDGES = """([x0, y0, x1, y1]) => {
  // the colour in the middle of each edge of the box, 1 px inside it (the line is 2 px)
  const canvas = document.getElementById("heatmap");
  const context = canvas.getContext("2d");
  const at = (x, y) => Array.from(context.getImageData(Math.round(x), Math.round(y), 1, 1).data);
  [x0, y0, x1, y1] = [x0, y0, x1, y1].map(Math.round);  // the page draws on whole pixels
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  return [at(cx, y0 + 1), at(cx, y1 - 2), at(x0 + 1, cy), at(x1 - 2, cy)];
}"""


def test_a_grounding_model_s_box_is_outlined_over_the_image(
    browser: Any, trained_grounding_run: dict[str, Path], tmp_path: Path
) -> None:
    """On a wide (non-square) image, each entity's box is drawn where the JSON puts it, in
    image pixels, and the caption says so."""
    from PIL import Image

    predictor = Predictor.from_pretrained(trained_grounding_run["model"])
    predictor.model.config.grounding_threshold = 0.0  # every entity gets a box to draw
    wide = tmp_path / "wide.png"
    Image.new("RGB", (400, 200), (128, 128, 128)).save(wide)
    with serving(predictor) as url, local_page(browser, url) as (page, problems):
        page.goto(url + "/")
        page.locator("#post-text").fill(POST)
        page.locator("#post-image").set_input_files(wide)
        with page.expect_response("**/v1/predict") as answer:
            page.get_by_role("button", name="Predict").click()
        entity = answer.value.json()["entities"][0]
        x0, y0, x1, y1 = entity["box"]
        assert 0 <= x0 < x1 <= 400 and 0 <= y0 < y1 <= 200
        page.locator("#highlighted .entity").first.click()
        sync_api.expect(page.locator("#heatmap")).to_be_visible()
        assert (page.evaluate("document.getElementById('heatmap').width")) == 400
        for red, green, blue, _ in page.evaluate(BOX_EDGES, entity["box"]):
            assert red < 40 and green > 200 and blue > 220, (red, green, blue)
        caption = page.locator("#explain-caption").inner_text()
        assert "outlined in cyan" in caption
        assert problems == []
