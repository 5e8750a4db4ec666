"""Feature cache: content keys, atomic writes, damaged entries, and encoding each image once."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save

import smner.predict.feature_cache as feature_cache
from smner.data.images import ImageStatus, ImageStore, UnsafeImageIdError, load_image_file
from smner.encoders.image_base import ImageEncoder, ImageFeatures
from smner.encoders.preprocessing import ImagePreprocessing
from smner.predict.feature_cache import ImageFeatureCache, cached_features

FINGERPRINT = "ab" * 32


class CountingEncoder(ImageEncoder):
    """A tiny conv net (16 px -> 4×4 grid of 4-d regions) that counts what it encodes."""

    def __init__(self) -> None:
        super().__init__("counting", 4, ImagePreprocessing(size=16, resize=16))
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, kernel_size=4, stride=4)
        self.norm = torch.nn.BatchNorm2d(4)
        self.calls = 0
        self.images = 0
        self.set_trainable(False)

    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures:
        self.calls += 1
        self.images += pixel_values.shape[0]
        maps = self.norm(self.conv(pixel_values))
        regions = maps.flatten(2).transpose(1, 2)
        return ImageFeatures(regions.mean(dim=1), regions, (maps.shape[2], maps.shape[3]))

    def config_dict(self) -> dict[str, object]:
        return {}


def jpeg(seed: int, size: tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG")
    return buffer.getvalue()


def features(seed: int, k: int = 4, d: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=generator), torch.randn(k, d, generator=generator)


# --- ImageFeatureCache --------------------------------------------------------------------------


def test_miss_put_hit(tmp_path: Path) -> None:
    cache = ImageFeatureCache(tmp_path, FINGERPRINT)
    digest = hashlib.sha256(b"image one").hexdigest()
    assert cache.get(digest) is None
    pooled, regions = features(0)
    cache.put(digest, pooled, regions, (2, 2))
    path = tmp_path / FINGERPRINT[:16] / digest[:2] / f"{digest}.safetensors"
    assert path.is_file()
    hit = cache.get(digest)
    assert hit is not None
    assert torch.equal(hit.pooled, pooled) and torch.equal(hit.regions, regions)
    assert hit.grid == (2, 2)
    # Other content misses; another encoder's cache is a different folder.
    assert cache.get(hashlib.sha256(b"image one, edited").hexdigest()) is None
    assert ImageFeatureCache(tmp_path, "cd" * 32).get(digest) is None


def test_put_stores_a_view_of_a_batch(tmp_path: Path) -> None:
    cache = ImageFeatureCache(tmp_path, FINGERPRINT)
    batch = torch.randn(3, 4, 5)
    digest = "0" * 64
    cache.put(digest, batch[1, 0], batch[1].transpose(0, 1)[:, :4].T, (2, 2))
    hit = cache.get(digest)
    assert hit is not None and torch.equal(hit.regions, batch[1])


def damaged_bytes(damage: str, good: bytes, pooled: torch.Tensor, regions: torch.Tensor) -> bytes:
    """A cache entry spoiled in one of the ways a crash, a full disk or a hand edit can."""
    if damage == "bad-shape":  # readable, but 3 regions cannot fill the 2×2 grid it claims
        metadata = {"format": "smner-image-features-1", "fingerprint": FINGERPRINT}
        metadata |= {"grid_h": "2", "grid_w": "2"}
        return save({"pooled": pooled, "regions": regions[:3]}, metadata=metadata)
    if damage == "cut":
        return good[: len(good) // 2]
    if damage == "empty":
        return b""
    return b"\x00not safetensors" * 10


@pytest.mark.parametrize("damage", ["garbage", "cut", "empty", "wrong-fingerprint", "bad-shape"])
def test_damaged_entry_is_a_miss_and_removed(tmp_path: Path, damage: str) -> None:
    cache = ImageFeatureCache(tmp_path, FINGERPRINT)
    digest = "f" * 64
    pooled, regions = features(1)
    if damage == "wrong-fingerprint":
        # Same 16-character folder prefix, different full fingerprint.
        other = ImageFeatureCache(tmp_path, FINGERPRINT[:16] + "0" * 48)
        other.put(digest, pooled, regions, (2, 2))
    else:
        cache.put(digest, pooled, regions, (2, 2))
        path = cache.path_for(digest)
        path.write_bytes(damaged_bytes(damage, path.read_bytes(), pooled, regions))
    assert cache.path_for(digest).exists()
    assert cache.get(digest) is None
    assert not cache.path_for(digest).exists()
    # The slot works again afterwards.
    cache.put(digest, pooled, regions, (2, 2))
    assert cache.get(digest) is not None


def test_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ImageFeatureCache(tmp_path, FINGERPRINT)
    digest = "1" * 64

    def crash(tensors: dict[str, torch.Tensor], filename: str, metadata: dict[str, str]) -> None:
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(feature_cache, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        cache.put(digest, *features(2), (2, 2))
    folder = cache.path_for(digest).parent
    assert not cache.path_for(digest).exists()
    assert list(folder.iterdir()) == []  # no temporary file left either
    assert cache.get(digest) is None


def test_put_and_path_validate_input(tmp_path: Path) -> None:
    cache = ImageFeatureCache(tmp_path, FINGERPRINT)
    with pytest.raises(ValueError):
        cache.put("2" * 64, *features(3), (3, 3))  # 4 regions cannot form a 3×3 grid
    for bad in ("../" + "a" * 61, "A" * 64, "a" * 63):
        with pytest.raises(ValueError):
            cache.path_for(bad)


# --- cached_features ----------------------------------------------------------------------------


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    a, b = jpeg(10), jpeg(11, size=(30, 50))
    (folder / "a.jpg").write_bytes(a)
    (folder / "b.jpg").write_bytes(b)
    (folder / "c.jpg").write_bytes(a)  # a copy of a under another id
    (folder / "d.jpg").write_bytes(b[: len(b) // 2])  # truncated
    return folder


IDS = ["a", "b", "a", None, "c", "d", "gone", "b"]


def test_cached_features_encodes_each_distinct_image_once(image_dir: Path, tmp_path: Path) -> None:
    encoder = CountingEncoder()
    cache = ImageFeatureCache(tmp_path / "cache", encoder.fingerprint())
    store = ImageStore(image_dir)
    results, grid = cached_features(encoder, store, IDS, cache, batch_size=1)
    assert grid == (4, 4)
    assert encoder.images == 2 and encoder.calls == 2  # a (and its copy c) and b
    assert [r is None for r in results] == [False, False, False, True, False, True, True, False]
    a, b = results[0], results[1]
    assert a is not None and b is not None
    for index in (2, 4):
        item = results[index]
        assert item is not None and torch.equal(item[0], a[0]) and torch.equal(item[1], a[1])
    assert a[0].shape == (4,) and a[1].shape == (16, 4)
    assert not torch.allclose(a[1], b[1])
    pictures = [load_image_file(image_dir / f"{name}.jpg")[0] for name in ("a", "b")]
    with torch.no_grad():
        expected = encoder(encoder.preprocessing(pictures))
    assert torch.allclose(a[1], expected.regions[0], atol=1e-6)
    assert torch.allclose(b[0], expected.pooled[1], atol=1e-6)
    assert store.counts[ImageStatus.OK] == 5
    assert store.counts[ImageStatus.TRUNCATED] == 1
    assert store.counts[ImageStatus.MISSING] == 1
    assert store.without_id == 1
    assert store.summary() == (
        "images: 5 loaded, 1 missing, 1 truncated, 1 post without an image id"
    )

    # A second run is served from the cache: nothing is encoded again.
    encoder.calls = encoder.images = 0
    again, grid = cached_features(encoder, ImageStore(image_dir), IDS, cache, batch_size=4)
    assert encoder.images == 0 and grid == (4, 4)
    for first, second in zip(results, again, strict=True):
        assert (first is None) == (second is None)
        if first is not None and second is not None:
            assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])

    # An edited image misses the cache; the others still hit.
    (image_dir / "b.jpg").write_bytes(jpeg(12))
    cached_features(encoder, ImageStore(image_dir), IDS, cache, progress=True)
    assert encoder.images == 1


@pytest.mark.parametrize("batch_size", [1, 8])
def test_cached_features_without_cache_encodes_copies_once(
    image_dir: Path, batch_size: int
) -> None:
    encoder = CountingEncoder()
    results, grid = cached_features(encoder, ImageStore(image_dir), IDS, None, batch_size)
    assert encoder.images == 2  # c.jpg, a copy of a.jpg, is recognised by its content
    assert encoder.calls == (2 if batch_size == 1 else 1)
    assert grid == (4, 4) and sum(r is not None for r in results) == 5


def test_cached_features_with_no_usable_image(image_dir: Path, tmp_path: Path) -> None:
    encoder = CountingEncoder()
    cache = ImageFeatureCache(tmp_path / "cache", encoder.fingerprint())
    results, grid = cached_features(encoder, ImageStore(image_dir), [None, "d", "gone"], cache)
    assert results == [None, None, None]
    assert grid == (4, 4)  # still known, from the encoder itself
    assert cached_features(encoder, ImageStore(None), ["a"], cache)[0] == [None]


def test_unwritable_cache_only_warns(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = CountingEncoder()
    cache = ImageFeatureCache(tmp_path / "cache", encoder.fingerprint())
    attempts = []

    def full_disk(*args: object) -> None:
        attempts.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache, "put", full_disk)
    with pytest.warns(RuntimeWarning, match="No space left"):
        results, _ = cached_features(encoder, ImageStore(image_dir), IDS, cache, batch_size=1)
    assert sum(r is not None for r in results) == 5
    assert len(attempts) == 1  # given up after the first failure


def test_cached_features_refuses_unsafe_ids(image_dir: Path) -> None:
    with pytest.raises(UnsafeImageIdError):
        cached_features(CountingEncoder(), ImageStore(image_dir), ["a", "../images/a"], None)
