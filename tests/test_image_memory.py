"""Decoding within a memory budget: large images are reduced while decoding, composited
without full-size RGBA copies, counted in the server's pixel budget, and given back."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from smner.data.images import ImageLimits, ImageStatus, load_image_bytes
from smner.serve.memory import keep_large_blocks_off_the_heap, trim

ROOT = Path(__file__).resolve().parents[1]


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_transparency_becomes_white_exactly_as_alpha_compositing_does() -> None:
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (37, 53, 4)).astype(np.uint8))
    picture, status = load_image_bytes(png(rgba))
    assert status is ImageStatus.OK and picture is not None
    expected = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    expected.alpha_composite(rgba)
    difference = np.abs(np.asarray(picture, int) - np.asarray(expected.convert("RGB"), int))
    assert difference.max() <= 1


def test_large_images_are_reduced_while_decoding() -> None:
    flat = Image.new("RGBA", (4000, 3000), (0, 0, 255, 128))
    picture, _ = load_image_bytes(png(flat), ImageLimits(decode_side=768))
    assert picture is not None and picture.size == (1333, 1000)  # factor 3000 // 768 = 3
    assert picture.getpixel((500, 300)) == (127, 127, 255)  # half blue over white
    photo = Image.fromarray(
        (np.linspace(0, 255, 4000)[None, :, None] * np.ones((3000, 1, 3))).astype(np.uint8)
    )
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    picture, _ = load_image_bytes(buffer.getvalue(), ImageLimits(decode_side=768))
    assert picture is not None and 768 <= min(picture.size) < 3000  # JPEG DCT scaling
    assert load_image_bytes(buffer.getvalue())[0].size == (4000, 3000)  # only when asked


PEAK = textwrap.dedent(
    """
    import io, resource, sys
    from PIL import Image
    from smner.data.images import ImageLimits, load_image_bytes
    buffer = io.BytesIO()
    Image.new("RGBA", (5000, 4000), (10, 120, 200, 128)).save(buffer, "PNG")
    data = buffer.getvalue()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    side = int(sys.argv[1]) or None
    picture, _ = load_image_bytes(data, ImageLimits(decode_side=side))
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024)
    """
)


@pytest.mark.parametrize(("side", "most_mib"), [(0, 2.3 * 80), (768, 1.3 * 80)])
def test_decoding_a_20_megapixel_rgba_png_stays_near_its_own_size(
    side: int, most_mib: float
) -> None:
    """The RGBA pixels alone are 80 MiB; compositing used to add three more copies."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK, str(side)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=ROOT,
    ).stdout
    assert float(out.strip()) < most_mib


def test_memory_helpers_work_here() -> None:
    assert keep_large_blocks_off_the_heap() in (True, False)
    trim()


def test_images_being_decoded_count_in_the_pixel_budget(tmp_path: Path) -> None:
    from smner.encoders.text import load_tokenizer
    from smner.model import build_model
    from smner.predict.predictor import Predictor
    from smner.serve.app import create_app
    from smner.serve.settings import ServeSettings
    from tests.tiny import make_image_encoder, make_text_encoder, tiny_config

    text, image = make_text_encoder(tmp_path / "t"), make_image_encoder(tmp_path / "i")
    build_model(tiny_config(text, image)).save_pretrained(
        tmp_path / "m", tokenizer=load_tokenizer(text)
    )
    settings = ServeSettings(max_image_pixels=10_000, max_pending_pixels=10_000)
    app = create_app(Predictor.from_pretrained(tmp_path / "m"), settings)
    photo = png(Image.new("RGB", (100, 90), (200, 10, 10)))
    with TestClient(app) as client:
        files = {"image": ("p.png", photo, "image/png")}
        assert client.post("/v1/predict", data={"text": "George"}, files=files).status_code == 200
        app.state.pixel_budget.used = 2_000  # other images being decoded or waiting
        answer = client.post("/v1/predict", data={"text": "George"}, files=files)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        app.state.pixel_budget.used = 0
        assert client.post("/v1/predict", data={"text": "George"}, files=files).status_code == 200
