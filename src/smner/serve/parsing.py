"""Reading a post from a request: JSON (text or tokens, base64 image) or a form (multipart or
urlencoded), strictly UTF-8, and refusing what is too long before it reaches the model."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse

import anyio
from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from smner.data.posts import PostInput
from smner.serve.errors import ApiError, validation_detail
from smner.serve.schemas import PredictRequest
from smner.serve.settings import ServeSettings


async def read_post(request: Request, settings: ServeSettings, max_tokens: int) -> PostInput:
    """The post of a ``/v1/predict`` request, by its content type, checked for length."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        post = await read_json(request)
    elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        post = await read_form(request, settings)
    else:
        raise ApiError(415, "unsupported content type", "use JSON or multipart/form-data")
    check_text(post, settings, max_tokens)
    return post


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


async def read_json(request: Request) -> PostInput:
    """A :class:`PredictRequest` body; its image, if any, as the file's bytes (not decoded)."""
    try:
        parsed = PredictRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise ApiError(422, "invalid request", validation_detail(error)) from None
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


async def read_form(request: Request, settings: ServeSettings) -> PostInput:
    """A form with one ``text`` field and, in multipart, an optional ``image`` file."""
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


def check_text(post: PostInput, settings: ServeSettings, max_tokens: int) -> None:
    """Refuse empty, too long or too many-token posts before they reach the model's queue."""
    limit = settings.max_text_chars
    if post.text is not None:
        if len(post.text) > limit:
            raise ApiError(422, "text too long", {"chars": len(post.text), "max_chars": limit})
        count = len(post.words())  # split once: the prediction reads the same split
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
