"""The limits of one server: each guards memory or CPU against a single hostile request."""

from __future__ import annotations

from dataclasses import dataclass

from smner.data.posts import MAX_TEXT_CHARS
from smner.errors import SmnerError


@dataclass(frozen=True)
class ServeSettings:
    """Limits of one server; each guards memory or CPU against a single hostile request."""

    max_request_bytes: int = 10 * 2**20
    max_image_pixels: int = 40_000_000
    #: images a post may bring (``images``); the model's ``max_images`` lowers it
    max_images_per_post: int = 4
    #: pixels of a post's images together; None: twice ``max_image_pixels``, at most
    #: ``max_pending_pixels`` (so that one post can always fit the pending budget)
    max_post_pixels: int | None = None
    max_text_chars: int = 2000
    max_batch: int = 16
    batch_wait_ms: float = 5.0
    #: posts waiting for the model; beyond it requests get 503
    max_pending: int = 256
    #: pixels of decoded images held by waiting posts (~3 bytes each); beyond it requests get 503
    max_pending_pixels: int = 200_000_000
    #: Host header values answered (a name or address, any port); None answers every host.
    #: ``smner serve`` sets it to the address it listens on, so that a page on another site
    #: cannot reach a local server through DNS rebinding.
    allowed_hosts: tuple[str, ...] | None = None
    #: images over LARGE_IMAGE_PIXELS decoded at once (each holds up to 4 bytes a pixel)
    max_large_decodes: int = 1
    #: seconds a request may take to send its whole body; beyond it the answer is 408
    body_timeout_s: float = 30.0
    #: request bytes all requests together may hold while their bodies arrive; beyond it 503
    max_buffered_bytes: int = 256 * 2**20

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_image_pixels", "max_text_chars", "max_batch"):
            if getattr(self, name) < 1:
                raise SmnerError(f"serve setting {name} must be at least 1")
        if self.max_text_chars > MAX_TEXT_CHARS:
            raise SmnerError(
                f"serve setting max_text_chars must be at most {MAX_TEXT_CHARS} (the longest "
                "text any post may have)"
            )
        if self.max_pending < 1 or self.batch_wait_ms < 0:
            raise SmnerError("serve settings need max_pending >= 1 and batch_wait_ms >= 0")
        if self.max_pending_pixels < self.max_image_pixels:
            raise SmnerError("serve setting max_pending_pixels must be >= max_image_pixels")
        if not 1 <= self.max_images_per_post <= 64:
            raise SmnerError("serve setting max_images_per_post must be between 1 and 64")
        post = self.max_post_pixels
        if post is not None and not self.max_image_pixels <= post <= self.max_pending_pixels:
            raise SmnerError(
                "serve setting max_post_pixels must be between max_image_pixels and "
                "max_pending_pixels"
            )
        if self.max_large_decodes < 1:
            raise SmnerError("serve setting max_large_decodes must be at least 1")
        if not self.body_timeout_s > 0:
            raise SmnerError("serve setting body_timeout_s must be above 0")
        if self.max_buffered_bytes < self.max_request_bytes:
            raise SmnerError("serve setting max_buffered_bytes must be >= max_request_bytes")

    @property
    def post_pixel_limit(self) -> int:
        """``max_post_pixels``, or its default when it is None."""
        if self.max_post_pixels is not None:
            return self.max_post_pixels
        return min(2 * self.max_image_pixels, self.max_pending_pixels)
