"""Image lookup and loading: unsafe ids, odd formats, damaged files and decompression bombs."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from smner.data.images import (
    ImageLimits,
    ImageStatus,
    ImageStore,
    UnsafeImageIdError,
    load_image_bytes,
    load_image_file,
    resolve_image_path,
)
from smner.errors import SmnerError
from tests.benchmark_fixture import Benchmark


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise_image(width: int = 64, height: int = 48, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width×height black pixels: a few KB that decode to ``w*h`` bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


# --- resolve_image_path -------------------------------------------------------------------------


def test_resolve_plain_id(tmp_path: Path) -> None:
    assert resolve_image_path(tmp_path, "1234") == tmp_path / "1234.jpg"
    assert resolve_image_path(tmp_path, "O_99", suffix=".png") == tmp_path / "O_99.png"
    # An id that already carries the suffix does not get it twice.
    assert resolve_image_path(tmp_path, "1234.jpg") == tmp_path / "1234.jpg"


@pytest.mark.parametrize(
    "image_id",
    ["", "../x", "..", ".", "a/b", "a\\b", "/etc/passwd", "x\x00y", "C:evil", "../../etc/passwd"],
)
def test_resolve_refuses_unsafe_ids(tmp_path: Path, image_id: str) -> None:
    with pytest.raises(UnsafeImageIdError) as caught:
        resolve_image_path(tmp_path, image_id)
    assert isinstance(caught.value, SmnerError)
    assert "\n" not in str(caught.value)


def test_resolve_refuses_symlink_out_of_folder(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(encoded(noise_image(), "JPEG"))
    (images / "evil.jpg").symlink_to(secret)
    with pytest.raises(UnsafeImageIdError, match="outside"):
        resolve_image_path(images, "evil")
    store = ImageStore(images)
    with pytest.raises(UnsafeImageIdError):
        store.load("evil")


def test_resolve_allows_symlink_inside_folder(tmp_path: Path) -> None:
    (tmp_path / "real.jpg").write_bytes(encoded(noise_image(), "JPEG"))
    (tmp_path / "alias.jpg").symlink_to(tmp_path / "real.jpg")
    assert resolve_image_path(tmp_path, "alias") == tmp_path / "alias.jpg"
    image, status = ImageStore(tmp_path).load("alias")
    assert status is ImageStatus.OK and image is not None


# --- load_image_bytes ---------------------------------------------------------------------------


def test_loads_jpeg_as_rgb() -> None:
    image, status = load_image_bytes(encoded(noise_image(64, 48), "JPEG"))
    assert status is ImageStatus.OK
    assert image is not None and image.mode == "RGB" and image.size == (64, 48)


def test_grayscale_and_palette_become_rgb() -> None:
    gray = Image.fromarray(np.full((8, 8), 77, dtype=np.uint8), mode="L")
    image, status = load_image_bytes(encoded(gray, "PNG"))
    assert status is ImageStatus.OK and image is not None and image.mode == "RGB"
    assert image.getpixel((3, 3)) == (77, 77, 77)
    gif = noise_image(16, 16).convert("P")
    image, status = load_image_bytes(encoded(gif, "GIF"))
    assert status is ImageStatus.OK and image is not None and image.mode == "RGB"


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (10, 20, 30, 255))
    image, status = load_image_bytes(encoded(rgba, "PNG"))
    assert status is ImageStatus.OK and image is not None
    assert image.getpixel((0, 0)) == (10, 20, 30)
    assert image.getpixel((3, 3)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    wide = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    image, status = load_image_bytes(encoded(wide, "JPEG", exif=exif))
    assert status is ImageStatus.OK and image is not None
    assert image.size == (20, 40)


def test_png_data_loads_whatever_the_name(tmp_path: Path) -> None:
    path = tmp_path / "7.jpg"
    path.write_bytes(encoded(noise_image(30, 20), "PNG"))
    image, status = load_image_file(path)
    assert status is ImageStatus.OK and image is not None and image.size == (30, 20)


@pytest.mark.parametrize("name", ["113.jpg", "33.jpg"])
def test_benchmark_png_files_named_jpg_load(benchmark_data: Benchmark, name: str) -> None:
    path = benchmark_data.root / "images" / "twitter2015" / name
    with Image.open(path) as raw:
        assert raw.format == "PNG"  # the point of the test: PNG data under a .jpg name
        expected_size = raw.size
    image, status = load_image_file(path)
    assert status is ImageStatus.OK
    assert image is not None and image.mode == "RGB" and image.size == expected_size
    assert np.asarray(image).std() > 1.0  # real content, not a blank canvas


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_truncated(fmt: str) -> None:
    data = encoded(noise_image(64, 64), fmt)
    image, status = load_image_bytes(data[: len(data) // 2])
    assert (image, status) == (None, ImageStatus.TRUNCATED)


def test_truncated_file_on_disk(tmp_path: Path) -> None:
    data = encoded(noise_image(64, 64), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) - 500])
    assert load_image_file(path) == (None, ImageStatus.TRUNCATED)


@pytest.mark.parametrize(
    "data",
    [
        np.random.default_rng(1).bytes(5000),
        b"",
        b"<html><body>404 not found</body></html>",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS would shell out: refused
    ],
)
def test_garbage_is_unreadable(data: bytes) -> None:
    assert load_image_bytes(data) == (None, ImageStatus.UNREADABLE)


def test_corrupt_pixel_data_is_not_an_exception() -> None:
    data = bytearray(encoded(noise_image(64, 64), "PNG"))
    data[60:400] = bytes(340)  # wipe part of the compressed stream and its CRC
    image, status = load_image_bytes(bytes(data))
    assert image is None
    assert status in (ImageStatus.UNREADABLE, ImageStatus.TRUNCATED)


def test_too_many_bytes() -> None:
    data = encoded(noise_image(), "PNG")
    assert load_image_bytes(data, ImageLimits(max_bytes=len(data) - 1)) == (
        None,
        ImageStatus.TOO_LARGE,
    )
    assert load_image_bytes(data, ImageLimits(max_bytes=len(data)))[1] is ImageStatus.OK


def test_file_too_large_is_not_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(encoded(noise_image(), "JPEG"))

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file must not be opened")

    monkeypatch.setattr("builtins.open", no_read)
    assert load_image_file(path, ImageLimits(max_bytes=10)) == (None, ImageStatus.TOO_LARGE)


@pytest.mark.parametrize(
    "side",
    [
        7_000,  # 49 Mpx: over our 40 Mpx limit, under PIL's own warning threshold
        10_000,  # 100 Mpx: PIL warns (DecompressionBombWarning)
        20_000,  # 400 Mpx: PIL raises DecompressionBombError on open
    ],
)
def test_decompression_bomb_is_refused_before_decoding(
    side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = png_bomb(side, side)
    assert len(data) < 100_000  # tiny on disk

    def no_decode(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    assert load_image_bytes(data) == (None, ImageStatus.TOO_LARGE)


def test_small_bomb_limit_is_configurable() -> None:
    data = png_bomb(300, 300)
    assert load_image_bytes(data, ImageLimits(max_pixels=300 * 300 - 1))[1] is ImageStatus.TOO_LARGE
    image, status = load_image_bytes(data, ImageLimits(max_pixels=300 * 300))
    assert status is ImageStatus.OK and image is not None and image.getpixel((5, 5)) == (0, 0, 0)


def test_missing_file(tmp_path: Path) -> None:
    assert load_image_file(tmp_path / "nope.jpg") == (None, ImageStatus.MISSING)


def test_folder_instead_of_file_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "5.jpg").mkdir()
    assert load_image_file(tmp_path / "5.jpg") == (None, ImageStatus.UNREADABLE)


# --- ImageStore ---------------------------------------------------------------------------------


def make_store(tmp_path: Path) -> ImageStore:
    data = encoded(noise_image(64, 64), "JPEG")
    (tmp_path / "1.jpg").write_bytes(data)
    (tmp_path / "2.jpg").write_bytes(encoded(noise_image(32, 32, seed=2), "PNG"))
    (tmp_path / "3.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "4.jpg").write_bytes(b"not an image")
    return ImageStore(tmp_path)


def test_store_counts_and_summary(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    assert store.summary() == "images: 0 loaded"
    outcomes = [store.load(i)[1] for i in ["1", "2", "3", "4", "9", "10", None, "1"]]
    assert outcomes == [
        ImageStatus.OK,
        ImageStatus.OK,
        ImageStatus.TRUNCATED,
        ImageStatus.UNREADABLE,
        ImageStatus.MISSING,
        ImageStatus.MISSING,
        ImageStatus.MISSING,
        ImageStatus.OK,
    ]
    assert store.counts[ImageStatus.OK] == 3
    assert store.without_id == 1
    assert store.summary() == (
        "images: 3 loaded, 2 missing, 1 unreadable, 1 truncated, 1 post without an image id"
    )
    store.load(None)
    assert store.summary().endswith("2 posts without an image id")
    store.load("3", count=False)
    assert store.counts[ImageStatus.TRUNCATED] == 1


def test_store_too_large_in_summary(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    store.limits = ImageLimits(max_bytes=100)
    assert store.load("1") == (None, ImageStatus.TOO_LARGE)
    assert store.summary() == "images: 0 loaded, 1 too large"


def test_store_paths(tmp_path: Path) -> None:
    store = ImageStore(str(tmp_path), suffix=".png")
    assert store.path_for("12") == tmp_path / "12.png"
    assert store.path_for(None) is None
    assert ImageStore(None).path_for("12") is None
    with pytest.raises(UnsafeImageIdError):
        store.path_for("../12")


def test_store_without_folder_reports_missing() -> None:
    store = ImageStore(None)
    assert store.load("12") == (None, ImageStatus.MISSING)
    assert store.summary() == "images: 0 loaded, 1 missing"
