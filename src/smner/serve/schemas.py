"""The API's request and response bodies, as pydantic models (they make ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smner.data.predictions import Mention


class PredictRequest(BaseModel):
    """A post as JSON: exactly one of ``text`` and ``tokens``, and optionally an image or a
    list of images."""

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
    images: list[str] | None = Field(
        None,
        description="the post's images, in order, each as 'image' takes it (up to the "
        "server's limits.max_images_per_post); the answer then has a status per image and "
        "each entity the index of the image it is grounded in. Not with 'image'.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> PredictRequest:
        if (self.text is None) == (self.tokens is None):
            raise ValueError("give exactly one of 'text' and 'tokens'")
        if self.image is not None and self.images is not None:
            raise ValueError("give 'image' (one image) or 'images' (a list of them), not both")
        return self


FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "description": "raw post text"},
        "image": {"type": "string", "format": "binary", "description": "the image file"},
        "images": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "several image files, one part named 'images' each, in order; "
            "not with 'image'",
        },
    },
}


TEXT_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": FORM_SCHEMA["properties"]["text"]},
}


class PredictResponse(BaseModel):
    tokens: list[str]
    image_status: str = Field(description="'ok', 'no image' or 'ignored (text-only model)'")
    entities: list[Mention]
    grid: tuple[int, int] | None = Field(
        description="[h, w] of the attention grids; null when the image was not attended to"
    )
    crop_box: tuple[float, float, float, float] | None = Field(
        default=None,
        description="[x0, y0, x1, y1]: the part of the (upright) image the model saw, in its "
        "pixels; the attention grid covers this box; null when the image was not attended to "
        "(and for a post given 'images': see crop_boxes)",
    )
    image_statuses: list[str] | None = Field(
        default=None,
        description="for a post given 'images' only: what happened to each image, in order "
        "('ok', or why it was not used); image_status is then 'ok' when any image was used",
    )
    crop_boxes: list[tuple[float, float, float, float] | None] | None = Field(
        default=None,
        description="for a post given 'images' only: crop_box of each image, in order (null "
        "for an image not attended to); an entity's attention and box are over the image "
        "its image_index names",
    )


class Limits(BaseModel):
    max_request_bytes: int
    max_image_pixels: int
    max_text_chars: int
    max_tokens: int
    max_images_per_post: int = Field(
        description="images a post may bring in 'images': the server's setting, lowered to "
        "what the model takes"
    )
    max_post_pixels: int = Field(description="pixels of a post's images together")


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
    backend: str = Field(
        default="pytorch", description="pytorch, or onnx for a folder written by smner export"
    )
    quantization: str | None = Field(
        default=None, description="int8 or bf16 when the model runs quantized, else null"
    )
    version: str = Field(description="smner version")
    limits: Limits


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    error: str
    detail: Any = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [
        (413, "body or image too large"),
        (415, "not JSON or multipart/form-data"),
        (422, "invalid post, fields, base64 or image"),
        (503, "too many waiting requests, or shutting down"),
    ]
}
