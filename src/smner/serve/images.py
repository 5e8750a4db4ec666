"""Decoding posted images under the server's limits on memory and CPU.

Decoding is CPU- and memory-heavy: large images decode one (or a few) at a time, in their own
low-priority thread(s), so that they cannot crowd out the small ones; every image holds its
pixels in a budget from the moment its header is read, decoding included, until the model is
done with it. A post of several images holds every one of them, and their pixels together are
checked from their headers before any is decoded.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress

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
        self.max_post_pixels = settings.post_pixel_limit
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

    def check_post(self, images: Sequence[bytes]) -> None:
        """Refuse a post's images from their headers, before any is decoded: one over the
        pixels of an image, or the one that takes the post over its pixels together (413,
        naming the image)."""
        total = 0
        for index, data in enumerate(images):
            size = image_size(data)
            pixels = size[0] * size[1] if size else 0  # unreadable: refused when decoded
            if pixels > self.limits.max_pixels:
                limits = {"max_pixels": self.limits.max_pixels, "max_bytes": self.limits.max_bytes}
                raise ApiError(413, "image too large", limits).for_image(index)
            total += pixels
            if total > self.max_post_pixels:
                detail = {"image": index, "pixels": total, "max_post_pixels": self.max_post_pixels}
                raise ApiError(413, "images too large together", detail)

    async def load_post(self, images: Sequence[bytes], held: ExitStack) -> list[Image.Image]:
        """A post's images decoded one after another, each one's pixels held in the budget
        by ``held`` from its decoding until ``held`` closes (after the model), so that the
        budget counts every image of the post; an image that cannot be used is an error
        naming it."""
        self.check_post(images)
        pictures = []
        for index, data in enumerate(images):
            try:
                picture = await self.load(data)
            except ApiError as error:
                if error.status not in (413, 422):  # the budget's 503 is not the image's fault
                    raise
                raise error.for_image(index) from None
            held.enter_context(self.pixel_budget.hold(picture.width * picture.height))
            pictures.append(picture)
        return pictures
