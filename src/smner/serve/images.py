"""Decoding posted images under the server's limits on memory and CPU.

Decoding is CPU- and memory-heavy: large images decode one (or a few) at a time, in their own
low-priority thread(s), so that they cannot crowd out the small ones; every image holds its
pixels in a budget from the moment its header is read, decoding included, until the model is
done with it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress

import anyio
from PIL import Image

from smner.data.images import IMAGE_FORMATS, ImageLimits, ImageStatus, image_size, load_image_bytes
from smner.serve.errors import ApiError
from smner.serve.memory import trim
from smner.serve.settings import ServeSettings

#: Images above this many pixels decode in the "large" slots (a 12-megapixel photo is not).
LARGE_IMAGE_PIXELS = 16_000_000


class PixelBudget:
    """Pixels of decoded images that requests hold while they wait for the model.

    Counting posts alone would let 256 waiting 40-megapixel images take 30 GB; this bounds
    their memory whatever their size, answering 503 (retry later) when it is spent.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        with self._lock:
            if self.used + pixels > self.limit:
                raise ApiError(
                    503,
                    "server busy",
                    "too many large images are being decoded or waiting; retry",
                    {"retry-after": "1"},
                )
            self.used += pixels
        try:
            yield
        finally:
            with self._lock:
                self.used -= pixels


def _lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: threads have their own nice value)."""
    with suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


class ImageDecoder:
    """Decodes the images of one server; ``close`` stops its large-image thread(s).

    ``decode_side``: the shorter side large images are reduced to while decoding (None: none).
    """

    def __init__(self, settings: ServeSettings, decode_side: int | None) -> None:
        self.limits = ImageLimits(
            settings.max_request_bytes, settings.max_image_pixels, decode_side=decode_side
        )
        self._large = ThreadPoolExecutor(
            settings.max_large_decodes,
            thread_name_prefix="smner-large-decode",
            initializer=_lower_thread_priority,
        )
        self._small_slots = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
        #: pixels of every image being decoded or waiting for the model
        self.pixel_budget = PixelBudget(settings.max_pending_pixels)
        # Large images take at most half the budget, so they never crowd out small ones.
        self._large_budget = PixelBudget(
            max(settings.max_pending_pixels // 2, settings.max_image_pixels)
        )

    def close(self) -> None:
        self._large.shutdown(wait=False, cancel_futures=True)

    def _decode_small(self, data: bytes) -> tuple[Image.Image | None, ImageStatus]:
        with self._small_slots:
            return load_image_bytes(data, self.limits)

    def _decode_large(self, data: bytes) -> tuple[Image.Image | None, ImageStatus]:
        try:
            return load_image_bytes(data, self.limits)
        finally:
            trim()  # hand the full-size decode's memory back at once

    async def decode(self, data: bytes) -> tuple[Image.Image | None, ImageStatus]:
        """Decode with the image's pixels held in the budget (503 when it is spent)."""
        size = image_size(data)  # the header only
        pixels = size[0] * size[1] if size else 0
        if pixels > self.limits.max_pixels:
            return None, ImageStatus.TOO_LARGE
        if pixels <= LARGE_IMAGE_PIXELS:
            with self.pixel_budget.hold(pixels):
                return await anyio.to_thread.run_sync(self._decode_small, data)
        # Large images queue behind each other, not in front of small images, and yield the
        # CPU to the model.
        with self._large_budget.hold(pixels), self.pixel_budget.hold(pixels):
            return await asyncio.wrap_future(self._large.submit(self._decode_large, data))

    async def load(self, data: bytes) -> Image.Image:
        """The decoded image, or the API error that says why there is none."""
        picture, status = await self.decode(data)
        if picture is not None and status is ImageStatus.OK:
            return picture
        if status is ImageStatus.TOO_LARGE:
            limits = {"max_pixels": self.limits.max_pixels, "max_bytes": self.limits.max_bytes}
            raise ApiError(413, "image too large", limits)
        if status is ImageStatus.TRUNCATED:
            raise ApiError(422, "image is truncated")
        raise ApiError(422, "not a readable image", {"formats": list(IMAGE_FORMATS)})
