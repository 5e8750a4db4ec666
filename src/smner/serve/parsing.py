"""Reading a post from a request: JSON (text or tokens, a base64 image or a list of them) or a
form (multipart or urlencoded), strictly UTF-8, and refusing what is too long or has too many
images before it reaches the model."""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
from dataclasses import dataclass

import anyio
from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from smner.data.posts import PostInput
from smner.serve.errors import ApiError, validation_detail
from smner.serve.schemas import PredictRequest
from smner.serve.settings import ServeSettings


@dataclass(frozen=True)
class ImageCap:
    """The most images a post may bring, and which limit sets it (the server's setting, or
    the model's ``max_images`` when it is lower), so that a refusal says which one."""

    most: int
    set_by: str = "max_images_per_post"

    @classmethod
    def of(
        cls, settings: ServeSettings, model_most: int | None, why: str = "model.max_images"
    ) -> ImageCap:
        """The cap of a server whose model takes ``model_most`` images, for the reason
        ``why`` (None: any number, as a text-only model ignores them)."""
        if model_most is not None and model_most < settings.max_images_per_post:
            return cls(model_most, why)
        return cls(settings.max_images_per_post)

    def refusal(self, count: int | None = None) -> ApiError:
        detail: dict[str, object] = {"max_images": self.most, "set_by": self.set_by}
        if count is not None:
            detail = {"images": count, **detail}
        return ApiError(422, "too many images", detail)

    def check(self, count: int) -> None:
        if count > self.most:
            raise self.refusal(count)


async def read_post(
    request: Request, settings: ServeSettings, max_tokens: int, image_cap: ImageCap | None = None
) -> PostInput:
    """The post of a ``/v1/predict`` request, by its content type, checked for length and for
    the number of its images (``image_cap``; the settings' own when None)."""
    cap = image_cap or ImageCap.of(settings, None)
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        post = await read_json(request, cap)
    elif media in ("multipart/form-data", "application/x-www-form-urlencoded"):
        post = await read_form(request, settings, cap)
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


def _decode_each(values: list[str]) -> list[bytes]:
    decoded = []
    for index, value in enumerate(values):
        try:
            decoded.append(_decode_base64(value))
        except ApiError as error:
            raise error.for_image(index) from None
    return decoded


async def read_json(request: Request, image_cap: ImageCap | None = None) -> PostInput:
    """A :class:`PredictRequest` body; its image(s), if any, as the files' bytes (not
    decoded). The number of images is checked before any is decoded from base64."""
    try:
        parsed = PredictRequest.model_validate_json(await request.body())
    except ValidationError as error:
        raise ApiError(422, "invalid request", validation_detail(error)) from None
    if parsed.images is not None:
        if image_cap is not None:
            image_cap.check(len(parsed.images))
        images = await anyio.to_thread.run_sync(_decode_each, parsed.images)
        return PostInput(parsed.text, parsed.tokens, images=list(images))
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


async def _parse_form(request: Request, max_part_size: int, image_cap: ImageCap) -> FormData:
    """The form fields, UTF-8 strictly: invalid UTF-8 is a 422 whatever the encoding of the
    form (JSON refuses it, and the three must agree). File parts beyond ``image_cap`` stop
    the parse (one more gets through, so that the usual check names how many came)."""
    media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media == "multipart/form-data":
        parser = _Utf8MultiPartParser(
            request.headers,
            request.stream(),
            max_files=image_cap.most + 1,  # one more: refused below, with the count
            max_fields=2,
            max_part_size=max_part_size,
        )
        try:
            return await parser.parse()
        except MultiPartException as error:
            if error.message.startswith("Too many files"):
                raise image_cap.refusal() from None
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


async def _read_file(value: UploadFile | str, name: str) -> bytes | None:
    """A file part's bytes; None for an empty file input (a browser sends one part with no
    file name and no bytes, some clients an empty string)."""
    if value == "":
        return None
    if not isinstance(value, UploadFile):
        raise ApiError(422, "invalid request", f"'{name}' must be a file part")
    data = await value.read()
    return None if not data and not value.filename else data


async def _read_files(parts: list[UploadFile | str]) -> list[bytes] | None:
    """The ``images`` parts' bytes, in order; None for the one empty part of a multiple file
    input with nothing chosen. An empty part among others stays (as b"": not an image)."""
    if len(parts) == 1:
        data = await _read_file(parts[0], "images")
        return None if data is None else [data]
    files = []
    for index, part in enumerate(parts):
        try:
            files.append(await _read_file(part, "images") or b"")
        except ApiError as error:
            raise error.for_image(index) from None
    return files


async def read_form(
    request: Request, settings: ServeSettings, image_cap: ImageCap | None = None
) -> PostInput:
    """A form with one ``text`` field and, in multipart, an optional ``image`` file or one
    or more ``images`` files (the post's list, in the order of the parts)."""
    if not _same_origin(request):
        raise ApiError(403, "cross-origin form post", "post forms from this server's own page")
    cap = image_cap or ImageCap.of(settings, None)
    form = await _parse_form(request, 4 * settings.max_text_chars + 64, cap)
    try:
        unknown = sorted(set(form.keys()) - {"text", "image", "images"})
        if unknown:
            raise ApiError(422, "unknown form field(s)", unknown)
        texts, image_parts = form.getlist("text"), form.getlist("image")
        list_parts = form.getlist("images")
        if len(texts) != 1 or not isinstance(texts[0], str):
            raise ApiError(422, "invalid request", "expected one 'text' form field (not a file)")
        if image_parts and list_parts:
            detail = "give one 'image' part or 'images' parts, not both"
            raise ApiError(422, "invalid request", detail)
        if len(image_parts) > 1:
            detail = "one 'image' part; send several images as parts named 'images'"
            raise ApiError(422, "invalid request", detail)
        if list_parts:
            cap.check(len(list_parts))
            images = await _read_files(list_parts)
            return PostInput(texts[0], None, images=list(images) if images is not None else None)
        image = await _read_file(image_parts[0], "image") if image_parts else None
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
