"""HTTP API and web page over a :class:`~smner.predict.Predictor`.

Everything a server needs lives in the app that :func:`create_app` returns (no module state),
so tests and benchmarks can build as many apps as they like. Requests are untrusted: bodies are
size-limited while they stream in, images are checked before they are decoded and never fetched
from a URL, and every error is a JSON ``{"error", "detail"}`` that leaves the server serving.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import re
import threading
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smner.data.images import (
    IMAGE_FORMATS,
    ImageLimits,
    ImageStatus,
    image_size,
    load_image_bytes,
)
from smner.data.tweet_tokenizer import tokenize_tweet
from smner.errors import SmnerError
from smner.predict import PostInput, Predictor
from smner.serve.batcher import BatcherClosed, BatcherOverloaded, MicroBatcher
from smner.serve.memory import trim
from smner.version import __version__

STATIC_DIR = Path(__file__).parent / "static"

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeSettings:
    """Limits of one server; each guards memory or CPU against a single hostile request."""

    max_request_bytes: int = 10 * 2**20
    max_image_pixels: int = 40_000_000
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
        if self.max_pending < 1 or self.batch_wait_ms < 0:
            raise SmnerError("serve settings need max_pending >= 1 and batch_wait_ms >= 0")
        if self.max_pending_pixels < self.max_image_pixels:
            raise SmnerError("serve setting max_pending_pixels must be >= max_image_pixels")
        if self.max_large_decodes < 1:
            raise SmnerError("serve setting max_large_decodes must be at least 1")
        if not self.body_timeout_s > 0:
            raise SmnerError("serve setting body_timeout_s must be above 0")
        if self.max_buffered_bytes < self.max_request_bytes:
            raise SmnerError("serve setting max_buffered_bytes must be >= max_request_bytes")


class ApiError(Exception):
    """An error answered as JSON ``{"error": error, "detail": detail}`` with ``status``."""

    def __init__(
        self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}


# --- request and response schemas ----------------------------------------------------------


class PredictRequest(BaseModel):
    """A post as JSON: exactly one of ``text`` and ``tokens``, and optionally an image."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"text": "George visited Paris today"}]},
    )

    text: str | None = Field(None, description="raw post text, split by a tweet-aware tokenizer")
    tokens: list[str] | None = Field(None, description="pre-split tokens, instead of text")
    image: str | None = Field(
        None,
        description="base64 of the image file (JPEG, PNG, GIF, WebP, BMP or TIFF); a "
        "'data:<type>;base64,' prefix is allowed. URLs are not fetched.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PredictRequest:
        if (self.text is None) == (self.tokens is None):
            raise ValueError("give exactly one of 'text' and 'tokens'")
        return self


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "description": "raw post text"},
        "image": {"type": "string", "format": "binary", "description": "the image file"},
    },
}


_TEXT_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": _FORM_SCHEMA["properties"]["text"]},
}


class EntityOut(BaseModel):
    text: str = Field(description="the entity as written in the post")
    type: str
    start: int = Field(description="first token, 0-based")
    end: int = Field(description="token after the last one (exclusive)")
    char_start: int = Field(description="first character (Unicode code point), 0-based")
    char_end: int = Field(description="character after the last one (exclusive)")
    score: float
    attention: list[list[float]] | None = Field(
        description="[h][w] attention over the image regions; null when no image was used"
    )
    global_attention: float | None = Field(description="attention on the whole-image token")
    box: tuple[float, float, float, float] | None = Field(
        default=None,
        description="[x0, y0, x1, y1] of the entity in the (upright) image, in its pixels; null "
        "when the model says it is not in the image, or the model does not ground",
    )
    box_score: float | None = Field(
        default=None,
        description="probability that the entity is in the image (models with a grounding "
        "head, posts with an image); null otherwise",
    )


class PredictResponse(BaseModel):
    tokens: list[str]
    image_status: str = Field(description="'ok', 'no image' or 'ignored (text-only model)'")
    entities: list[EntityOut]
    grid: tuple[int, int] | None = Field(
        description="[h, w] of the attention grids; null when the image was not attended to"
    )
    crop_box: tuple[float, float, float, float] | None = Field(
        default=None,
        description="[x0, y0, x1, y1]: the part of the (upright) image the model saw, in its "
        "pixels; the attention grid covers this box; null when the image was not attended to",
    )


class Limits(BaseModel):
    max_request_bytes: int
    max_image_pixels: int
    max_text_chars: int
    max_tokens: int


class ModelInfo(BaseModel):
    labels: list[str]
    type: str
    text_encoder: str
    image_encoder: str
    max_span_width: int
    use_image: bool
    use_ib: bool
    use_cross_attention: bool
    grid: tuple[int, int] | None
    grounding: bool = Field(
        default=False, description="whether entities come with their box in the image"
    )
    version: str = Field(description="smner version")
    limits: Limits


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    error: str
    detail: Any = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [
        (413, "body or image too large"),
        (415, "not JSON or multipart/form-data"),
        (422, "invalid post, fields, base64 or image"),
        (503, "too many waiting requests, or shutting down"),
    ]
}


# --- ASGI middleware -----------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class _BodyTooSlow(Exception):
    pass


class _BuffersFull(Exception):
    pass


class ByteBudget:
    """Request bytes received and not yet released, over all requests (thread-safe)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def take(self, amount: int) -> bool:
        with self._lock:
            if self.used + amount > self.limit:
                return False
            self.used += amount
            return True

    def give(self, amount: int) -> None:
        with self._lock:
            self.used -= amount


def _error(status: int, error: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


class BodyLimit:
    """413 for bodies over ``max_bytes``: from Content-Length before any byte is read, and by
    counting while streaming (chunked bodies, or a Content-Length that lies); 408 for a body
    not received within ``timeout_s`` (a client trickling bytes holds memory and a slot); 400
    for a request framed both by Content-Length and Transfer-Encoding (request smuggling)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        timeout_s: float = 30.0,
        budget: ByteBudget | None = None,
    ) -> None:
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s
        self.budget = budget or ByteBudget(2**62)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names = [name.lower() for name, _ in scope["headers"]]
        if b"transfer-encoding" in names and b"content-length" in names:
            detail = "a request has either Content-Length or Transfer-Encoding, not both"
            await _error(400, "ambiguous request framing", detail)(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await _error(400, "invalid Content-Length")(scope, receive, send)
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0
        started = False
        deadline = anyio.current_time() + self.timeout_s

        async def counting_receive() -> Message:
            nonlocal seen
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)) as scope_:
                message = await receive()
            if scope_.cancelled_caught:
                raise _BodyTooSlow
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                if not self.budget.take(chunk):
                    raise _BuffersFull
                seen += chunk
                if seen > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BuffersFull:
            if started:
                raise
            response = _error(503, "server busy", "too many request bodies are arriving; retry")
            response.headers["retry-after"] = "1"
            await response(scope, receive, send)
        except _BodyTooLarge:
            if started:
                raise
            await self._too_large(scope, receive, send)
        except _BodyTooSlow:
            if started:
                raise
            detail = {"body_timeout_s": self.timeout_s}
            response = _error(408, "request body not received in time", detail)
            response.headers["connection"] = "close"
            await response(scope, receive, send)
        finally:
            self.budget.give(seen)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = {"max_request_bytes": self.max_bytes}
        await _error(413, "request body too large", detail)(scope, receive, send)


def _host_name(value: str) -> str:
    """The host of a Host header (``name``, ``name:port``, ``[v6]`` or ``[v6]:port``)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class HostCheck:
    """400 for a Host header outside ``allowed`` (names or addresses, ports ignored).

    A page on another site can make a browser send requests to ``127.0.0.1`` under its own
    name (DNS rebinding) and read the answers; checking the Host header stops that.
    """

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = {_host_name(h) if h != "*" else "*" for h in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.allowed:
                detail = "this server answers only the host names it was started for"
                await _error(400, "invalid Host header", detail)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Headers that keep the page's scripts, styles and images to this server."""

    HEADERS: tuple[tuple[bytes, bytes], ...] = (
        (
            b"content-security-policy",
            b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: "
            b"data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            b"frame-ancestors 'none'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *self.HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


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


# --- reading a post ------------------------------------------------------------------------


_DATA_URL_PREFIX = re.compile(r"data:[\w.+-]+/[\w.+-]+;base64,", re.ASCII)


def _decode_base64(value: str) -> bytes:
    prefix = _DATA_URL_PREFIX.match(value)
    compact = "".join(value[prefix.end() if prefix else 0 :].split())
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422, "image is not valid base64", "send the image file's bytes base64-encoded"
        ) from None


def _validation_detail(error: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    # No "input" (it may be megabytes of base64) and no "ctx" (it may hold exception objects).
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]


async def _read_json(request: Request) -> PostInput:
    try:
        parsed = PredictRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise ApiError(422, "invalid request", _validation_detail(error)) from None
    if parsed.image is None:
        return PostInput(parsed.text, parsed.tokens, None)
    # Off the event loop: up to max_request_bytes of base64 to clean and decode.
    image = await anyio.to_thread.run_sync(_decode_base64, parsed.image)
    return PostInput(parsed.text, parsed.tokens, image)


class _Utf8MultiPartParser(MultiPartParser):
    """Starlette's multipart parser, but a text field that is not UTF-8 is an error (Starlette
    decodes it as Latin-1 instead, which turns one bad byte into silent mojibake)."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                text = bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(f"form field {part.field_name!r} is not UTF-8") from None
            self.items.append((part.field_name, text))
            return
        super().on_part_end()


def _utf8(value: bytes, what: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(422, "invalid request", f"{what} is not UTF-8") from None


async def _parse_form(request: Request, max_part_size: int) -> FormData:
    """The form fields, UTF-8 strictly: invalid UTF-8 is a 422 whatever the encoding of the
    form (JSON refuses it, and the three must agree)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        parser = _Utf8MultiPartParser(
            request.headers,
            request.stream(),
            max_files=1,
            max_fields=2,
            max_part_size=max_part_size,
        )
        try:
            return await parser.parse()
        except MultiPartException as error:
            raise ApiError(422, "invalid multipart body", error.message) from None
    body = await request.body()  # a text-only form: bounded by max_part_size below
    if len(body) > 3 * max_part_size:
        raise ApiError(422, "invalid request", "form too large for a text field")
    fields = [f for f in body.split(b"&") if f]
    if len(fields) > 2:
        raise ApiError(422, "invalid request", "too many form fields")
    pairs = []
    for item in fields:  # percent-decoded to bytes, then UTF-8 strictly
        name, _, value = item.partition(b"=")
        name, value = (urllib.parse.unquote_to_bytes(v.replace(b"+", b" ")) for v in (name, value))
        pairs.append((_utf8(name, "a field name"), _utf8(value, "form field value")))
    return FormData(pairs)


def _same_origin(request: Request) -> bool:
    """False for a form post a browser sends from another site's page.

    Forms (multipart, urlencoded) are the requests a page may send to any site without asking
    it first; JSON posts need a CORS preflight this server never grants. Clients outside a
    browser (curl, scripts) send neither header and are not affected.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    parts = urllib.parse.urlsplit(origin)
    return bool(parts.netloc) and parts.netloc.lower() == request.headers.get("host", "").lower()


async def _read_form(request: Request, settings: ServeSettings) -> PostInput:
    if not _same_origin(request):
        raise ApiError(403, "cross-origin form post", "post forms from this server's own page")
    form = await _parse_form(request, 4 * settings.max_text_chars + 64)
    try:
        unknown = sorted(set(form.keys()) - {"text", "image"})
        if unknown:
            raise ApiError(422, "unknown form field(s)", unknown)
        texts, images = form.getlist("text"), form.getlist("image")
        if len(texts) != 1 or not isinstance(texts[0], str):
            raise ApiError(422, "invalid request", "expected one 'text' form field (not a file)")
        image = None
        if images and images[0] != "":  # "": an empty file input, as some clients send it
            upload = images[0]
            if not isinstance(upload, UploadFile):
                raise ApiError(422, "invalid request", "'image' must be a file part")
            image = await upload.read()
            if not image and not upload.filename:  # a browser's empty file input
                image = None
        return PostInput(texts[0], None, image)
    finally:
        await form.close()


def _check_text(post: PostInput, settings: ServeSettings, max_tokens: int) -> None:
    """Refuse empty, too long or too many-token posts before they reach the model's queue."""
    limit = settings.max_text_chars
    if post.text is not None:
        if len(post.text) > limit:
            raise ApiError(422, "text too long", {"chars": len(post.text), "max_chars": limit})
        count = len(tokenize_tweet(post.text))
    else:
        tokens = post.tokens or []
        if not all(t.strip() for t in tokens):
            raise ApiError(422, "invalid request", "tokens must be non-blank strings")
        chars = sum(map(len, tokens)) + max(len(tokens) - 1, 0)
        if chars > limit:
            raise ApiError(422, "text too long", {"chars": chars, "max_chars": limit})
        count = len(tokens)
    if count == 0:
        raise ApiError(422, "empty text", "the post has no tokens")
    if count > max_tokens:
        raise ApiError(422, "too many tokens", {"tokens": count, "max_tokens": max_tokens})


# --- the app -------------------------------------------------------------------------------


def _public_name(name: str) -> str:
    """An encoder name, without the server's directories when it is a local path."""
    scheme, sep, rest = name.partition(":") if name.startswith("hf:") else ("", "", name)
    if Path(rest).is_absolute() or rest.startswith((".", "~")):
        rest = Path(rest).name
    return f"{scheme}{sep}{rest}"


#: Images above this many pixels decode in the "large" slots (a 12-megapixel photo is not).
LARGE_IMAGE_PIXELS = 16_000_000


def _lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: threads have their own nice value)."""
    with suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _decode_side(predictor: Predictor) -> int | None:
    """The shorter side large images are reduced to while decoding: three times the model's
    resize (its resampling reduces by the same factor first, ``reducing_gap=3``)."""
    encoder = predictor.model.image_encoder
    return 3 * int(encoder.preprocessing.resize) if encoder is not None else None


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The API (``/health``, ``/v1/model``, ``/v1/predict``) and the page (``/``)."""
    settings = settings or ServeSettings()
    config = predictor.model.config
    grid = predictor.model.attention_grid
    image_limits = ImageLimits(
        settings.max_request_bytes, settings.max_image_pixels, decode_side=_decode_side(predictor)
    )
    # Decoding is CPU- and memory-heavy: large images one (or a few) at a time, so that they
    # cannot crowd out the small ones; every image holds its pixels in the budget from the
    # moment its header is read, decoding included, until the model is done with it.
    large_decoder = ThreadPoolExecutor(
        settings.max_large_decodes,
        thread_name_prefix="smner-large-decode",
        initializer=_lower_thread_priority,
    )
    small_slots = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))
    pixel_budget = PixelBudget(settings.max_pending_pixels)
    large_budget = PixelBudget(max(settings.max_pending_pixels // 2, settings.max_image_pixels))
    batcher: MicroBatcher[PostInput, Any] = MicroBatcher(
        lambda posts: predictor.predict_many(posts, batch_size=settings.max_batch),
        max_batch=settings.max_batch,
        max_wait_s=settings.batch_wait_ms / 1000,
        max_pending=settings.max_pending,
    )
    spans_model = config.type == "smner"
    info = ModelInfo(
        labels=list(config.labels),
        type=config.type,
        text_encoder=_public_name(config.text_encoder),
        image_encoder=_public_name(config.image_encoder),
        max_span_width=config.max_span_width,
        use_image=config.use_image,
        # the BIO baselines have neither alignment module, whatever their config's defaults say
        use_ib=spans_model and config.use_image and config.use_ib,
        use_cross_attention=spans_model and config.use_image and config.use_cross_attention,
        grid=grid,
        grounding=predictor.model.grounds,
        version=__version__,
        limits=Limits(
            max_request_bytes=settings.max_request_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_text_chars=settings.max_text_chars,
            max_tokens=predictor.max_tokens,
        ),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await anyio.to_thread.run_sync(batcher.close)
        large_decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="smner",
        version=__version__,
        description="Typed entities in social-media posts (text + image), with each entity's "
        "attention over the image regions.",
        docs_url=None,  # Swagger UI and ReDoc load from a CDN; /openapi.json stays
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.state.pixel_budget = pixel_budget
    app.state.byte_budget = ByteBudget(settings.max_buffered_bytes)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        timeout_s=settings.body_timeout_s,
        budget=app.state.byte_budget,
    )
    if settings.allowed_hosts is not None:
        app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    app.add_middleware(SecurityHeaders)
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def decode_small(data: bytes) -> tuple[Image.Image | None, ImageStatus]:
        with small_slots:
            return load_image_bytes(data, image_limits)

    def decode_large(data: bytes) -> tuple[Image.Image | None, ImageStatus]:
        try:
            return load_image_bytes(data, image_limits)
        finally:
            trim()  # hand the full-size decode's memory back at once

    async def decode(data: bytes) -> tuple[Image.Image | None, ImageStatus]:
        """Decode with the image's pixels held in the budget (503 when it is spent)."""
        size = image_size(data)  # the header only
        pixels = size[0] * size[1] if size else 0
        if pixels > image_limits.max_pixels:
            return None, ImageStatus.TOO_LARGE
        if pixels <= LARGE_IMAGE_PIXELS:
            with pixel_budget.hold(pixels):
                return await anyio.to_thread.run_sync(decode_small, data)
        # Large images take at most half the budget, so they never crowd out small ones,
        # and decode in their own low-priority thread(s): they queue behind each other, not
        # in front of small images, and yield the CPU to the model.
        with large_budget.hold(pixels), pixel_budget.hold(pixels):
            return await asyncio.wrap_future(large_decoder.submit(decode_large, data))

    async def load_image(data: bytes) -> Image.Image:
        picture, status = await decode(data)
        if picture is not None and status is ImageStatus.OK:
            return picture
        if status is ImageStatus.TOO_LARGE:
            limits = {"max_pixels": image_limits.max_pixels, "max_bytes": image_limits.max_bytes}
            raise ApiError(413, "image too large", limits)
        if status is ImageStatus.TRUNCATED:
            raise ApiError(422, "image is truncated")
        raise ApiError(422, "not a readable image", {"formats": list(IMAGE_FORMATS)})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health")
    async def health() -> Health:
        return Health(status="ok")

    @app.get("/v1/model")
    async def model_info() -> ModelInfo:
        return info

    @app.post(
        "/v1/predict",
        response_model=PredictResponse,
        responses=_ERRORS,
        summary="Entities of one post, with their attention over the image",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                    "multipart/form-data": {"schema": _FORM_SCHEMA},
                    "application/x-www-form-urlencoded": {"schema": _TEXT_FORM_SCHEMA},
                },
            }
        },
    )
    async def predict(request: Request) -> dict[str, Any]:
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media == "application/json" or media.endswith("+json"):
            post = await _read_json(request)
        elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
            post = await _read_form(request, settings)
        else:
            raise ApiError(415, "unsupported content type", "use JSON or multipart/form-data")
        _check_text(post, settings, predictor.max_tokens)
        picture = await load_image(post.image) if post.image is not None else None
        try:
            with pixel_budget.hold(picture.width * picture.height if picture else 0):
                prediction = await batcher.run(replace(post, image=picture))
        except (BatcherOverloaded, BatcherClosed) as error:
            raise ApiError(503, "server busy", str(error)) from None
        except SmnerError as error:
            raise ApiError(422, "invalid post", str(error)) from None
        record = prediction.to_dict(explain=True)
        attended = grid is not None and picture is not None
        attended = attended and prediction.image_status == ImageStatus.OK.value
        record["grid"] = grid if attended else None
        record["crop_box"] = (
            predictor.model.image.preprocessing.crop_box(picture.width, picture.height)
            if attended
            else None
        )
        return record

    def openapi() -> dict[str, Any]:
        # /v1/predict reads its body itself (JSON or multipart), so FastAPI does not see the
        # JSON model; add it, so that the schema describes the request exactly.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas["PredictRequest"] = PredictRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error, expected or not, as JSON ``{"error", "detail"}``."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, error: ApiError) -> JSONResponse:
        response = _error(error.status, error.error, error.detail)
        response.headers.update(error.headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        response = _error(error.status_code, str(error.detail))
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, error: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid request", _validation_detail(error))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, _: ClientDisconnect) -> JSONResponse:
        # Nobody is left to answer; one line, not a traceback.
        client = request.client.host if request.client else "a client"
        logger.info("%s disconnected before its request body was complete", client)
        return _error(400, "client disconnected")

    @app.exception_handler(Exception)
    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error while answering a request", exc_info=error)
        return _error(500, "internal server error")
