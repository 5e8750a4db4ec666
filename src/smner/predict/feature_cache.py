"""Cache of a frozen image backbone's features, keyed by image content.

With the backbone frozen (the default), an image's features never change, yet decoding and
encoding every image again in every epoch and every run dominates the cost of training on a CPU.
Features are stored per image under the encoder's fingerprint and the sha256 of the image file's
bytes: a renamed or copied image hits the cache, an edited one misses, and a different backbone or
preprocessing can never read another's features.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from smner.data.images import ImageStatus, ImageStore, load_image_bytes
from smner.encoders.image_base import ImageEncoder, ImageFeatures
from smner.fileio import atomic_path

_FORMAT = "smner-image-features-1"
_DIGEST = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CachedFeatures:
    """One image's features: ``pooled [D]``, ``regions [K, D]`` and the grid (h, w)."""

    pooled: torch.Tensor
    regions: torch.Tensor
    grid: tuple[int, int]


class ImageFeatureCache:
    """Per-image feature files under ``root/<fingerprint[:16]>/<sha[:2]>/<sha>.safetensors``.

    Entries are written atomically, and an unreadable entry (a crash of another tool, a full
    disk, a hand edit) is treated as a miss and removed: the cache can always be deleted and is
    never a reason for a run to fail.
    """

    def __init__(self, root: Path | str, encoder_fingerprint: str) -> None:
        self.root = Path(root)
        self.encoder_fingerprint = encoder_fingerprint
        self.folder = self.root / encoder_fingerprint[:16]

    @staticmethod
    def digest_bytes(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def path_for(self, digest: str) -> Path:
        if not _DIGEST.fullmatch(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        return self.folder / digest[:2] / f"{digest}.safetensors"

    def get(self, digest: str) -> CachedFeatures | None:
        """The features cached for an image, or None (a damaged entry is deleted)."""
        path = self.path_for(digest)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                pooled = handle.get_tensor("pooled")
                regions = handle.get_tensor("regions")
            grid = (int(metadata["grid_h"]), int(metadata["grid_w"]))
            valid = (
                metadata.get("format") == _FORMAT
                and metadata.get("fingerprint") == self.encoder_fingerprint
                and pooled.dim() == 1
                and regions.dim() == 2
                and regions.shape[0] == grid[0] * grid[1]
                and regions.shape[1] == pooled.shape[0]
            )
        except (SafetensorError, OSError, ValueError, KeyError, RuntimeError):
            valid = False
        if not valid:
            with contextlib.suppress(OSError):  # e.g. a read-only cache: still just a miss
                path.unlink(missing_ok=True)
            return None
        return CachedFeatures(pooled=pooled, regions=regions, grid=grid)

    def put(
        self, digest: str, pooled: torch.Tensor, regions: torch.Tensor, grid: tuple[int, int]
    ) -> None:
        """Store one image's features; readers never see a partly written file."""
        if pooled.dim() != 1 or regions.dim() != 2 or regions.shape[0] != grid[0] * grid[1]:
            raise ValueError(
                f"expected pooled [D] and regions [h*w, D] for grid {grid}, got "
                f"{tuple(pooled.shape)} and {tuple(regions.shape)}"
            )
        tensors = {
            "pooled": pooled.detach().cpu().contiguous().clone(),
            "regions": regions.detach().cpu().contiguous().clone(),
        }
        metadata = {
            "format": _FORMAT,
            "fingerprint": self.encoder_fingerprint,
            "grid_h": str(grid[0]),
            "grid_w": str(grid[1]),
        }
        with atomic_path(self.path_for(digest)) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)


def _device_of(encoder: ImageEncoder) -> torch.device:
    parameter = next(encoder.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _encode_pixels(encoder: ImageEncoder, pixels: torch.Tensor) -> ImageFeatures:
    """Run the encoder on one preprocessed batch; features come back on the CPU."""
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            features = encoder(pixels.to(_device_of(encoder)))
    finally:
        encoder.train(was_training)
    return ImageFeatures(
        pooled=features.pooled.float().cpu(),
        regions=features.regions.float().cpu(),
        grid=features.grid,
    )


def cached_features(
    encoder: ImageEncoder,
    store: ImageStore,
    image_ids: Sequence[str | None],
    cache: ImageFeatureCache | None,
    batch_size: int = 32,
    progress: bool = False,
    pixels: Callable[[list[Image.Image]], torch.Tensor] | None = None,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor] | None], tuple[int, int]]:
    """``(pooled [D], regions [K, D])`` per post (None: no usable image), and the grid.

    Each distinct image (by id, and by content) is read once, and only cache misses are decoded
    and encoded, ``batch_size`` at a time, so memory holds one batch of decoded images, never the
    whole data set. Every post's outcome is counted in ``store``. Raises UnsafeImageIdError for
    an id that escapes the image folder. A cache that cannot be written is warned about once
    and then left alone. ``pixels`` prepares decoded images (the model's
    :meth:`~smner.processing.processor.Processor.pixels`; the encoder's own preprocessing
    when not given).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be positive")
    results: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(image_ids)
    positions: dict[str, list[int]] = {}
    for index, image_id in enumerate(image_ids):
        if image_id is None:
            store.record(None)
        else:
            positions.setdefault(image_id, []).append(index)

    prepare = pixels if pixels is not None else encoder.preprocessing
    grid: tuple[int, int] | None = None
    done: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # by content digest
    waiting: dict[str, list[int]] = {}  # digest -> positions, for images in the pending batch
    batch: list[tuple[str, torch.Tensor]] = []  # (digest, preprocessed pixels)

    writable = cache is not None

    def write_to_cache(
        digest: str, pooled: torch.Tensor, regions: torch.Tensor, grid: tuple[int, int]
    ) -> None:
        # A cache that cannot be written (full disk, read-only folder) only costs speed.
        nonlocal writable
        if cache is None or not writable:
            return
        try:
            cache.put(digest, pooled, regions, grid)
        except OSError as error:
            writable = False
            warnings.warn(
                f"image feature cache disabled for this run: cannot write under {cache.root}: "
                f"{error}",
                RuntimeWarning,
                stacklevel=3,
            )

    def flush() -> None:
        nonlocal grid
        if not batch:
            return
        features = _encode_pixels(encoder, torch.cat([pixels for _, pixels in batch]))
        grid = features.grid
        for row, (digest, _) in enumerate(batch):
            pooled, regions = features.pooled[row], features.regions[row]
            write_to_cache(digest, pooled, regions, features.grid)
            done[digest] = (pooled, regions)
            where = waiting.pop(digest)
            for index in where:
                results[index] = done[digest]
            store.record(ImageStatus.OK, len(where))
        batch.clear()

    failed: dict[str, ImageStatus] = {}  # by content digest
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(positions), desc="image features", unit="image")
    try:
        for image_id, where in positions.items():
            if bar is not None:
                bar.update(1)
            data, status = store.read_bytes(image_id)
            if data is None:
                store.record(status, len(where))
                continue
            digest = ImageFeatureCache.digest_bytes(data)
            if digest in done:
                for index in where:
                    results[index] = done[digest]
                store.record(ImageStatus.OK, len(where))
                continue
            if digest in waiting:  # a copy of an image already in the pending batch
                waiting[digest].extend(where)
                continue
            if digest in failed:
                store.record(failed[digest], len(where))
                continue
            hit = cache.get(digest) if cache is not None else None
            if hit is not None:
                grid = hit.grid
                done[digest] = (hit.pooled, hit.regions)
                for index in where:
                    results[index] = done[digest]
                store.record(ImageStatus.OK, len(where))
                continue
            image, status = load_image_bytes(data, store.limits)
            del data
            if image is None:
                failed[digest] = status
                store.record(status, len(where))
                continue
            # Keep only the small preprocessed tensor: a decoded photo can be 100 MB.
            batch.append((digest, prepare([image])))
            waiting[digest] = list(where)
            if len(batch) >= batch_size:
                flush()
        flush()
    finally:
        if bar is not None:
            bar.close()
    return results, grid if grid is not None else encoder.output_grid()
