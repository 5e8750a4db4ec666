"""HTTP API and web page over a :class:`~smner.predict.predictor.Predictor`.

Everything a server needs lives in the app that :func:`create_app` returns (no module state),
so tests and benchmarks can build as many apps as they like. Requests are untrusted: bodies are
size-limited while they stream in (:mod:`~smner.serve.middleware`), images are checked before
they are decoded and never fetched from a URL (:mod:`~smner.serve.images`), posts are read
strictly (:mod:`~smner.serve.parsing`), and every error is a JSON ``{"error", "detail"}`` that
leaves the server serving (:mod:`~smner.serve.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image

from smner.data.images import ImageStatus
from smner.data.posts import PostInput
from smner.errors import SmnerError
from smner.predict.predictor import Predictor
from smner.serve.batcher import BatcherClosed, BatcherOverloaded, MicroBatcher
from smner.serve.errors import ApiError, add_error_handlers
from smner.serve.images import LARGE_IMAGE_PIXELS, ImageDecoder, PixelBudget
from smner.serve.middleware import BodyLimit, ByteBudget, HostCheck, SecurityHeaders, _host_name
from smner.serve.parsing import ImageCap, read_post
from smner.serve.schemas import (
    ERRORS,
    FORM_SCHEMA,
    TEXT_FORM_SCHEMA,
    Health,
    Limits,
    ModelInfo,
    PredictRequest,
    PredictResponse,
)
from smner.serve.settings import ServeSettings
from smner.version import __version__

STATIC_DIR = Path(__file__).parent / "static"

__all__ = [
    "LARGE_IMAGE_PIXELS",
    "STATIC_DIR",
    "ApiError",
    "BodyLimit",
    "ByteBudget",
    "HostCheck",
    "PixelBudget",
    "PostInput",
    "SecurityHeaders",
    "ServeSettings",
    "_host_name",
    "create_app",
]


def _public_name(name: str) -> str:
    """An encoder name, without the server's directories when it is a local path."""
    scheme, sep, rest = name.partition(":") if name.startswith("hf:") else ("", "", name)
    if Path(rest).is_absolute() or rest.startswith((".", "~")):
        rest = Path(rest).name
    return f"{scheme}{sep}{rest}"


def _decode_side(predictor: Predictor) -> int | None:
    """The shorter side large images are reduced to while decoding: three times the model's
    resize (its resampling reduces by the same factor first, ``reducing_gap=3``)."""
    preprocessing = predictor.processor.image
    return 3 * int(preprocessing.resize) if preprocessing is not None else None


def _image_cap(predictor: Predictor, settings: ServeSettings) -> ImageCap:
    """The most images a post may bring: the server's setting, lowered to what the
    predictor takes as ``Predictor.tokenize`` checks it (a text-only model ignores images),
    so that a post is refused before its images are decoded rather than after."""
    return ImageCap.of(settings, *predictor.image_limit())


def _model_info(predictor: Predictor, settings: ServeSettings, image_cap: ImageCap) -> ModelInfo:
    config = predictor.model.config
    return ModelInfo(
        labels=list(config.labels),
        type=config.type,
        text_encoder=_public_name(config.text_encoder),
        image_encoder=_public_name(config.image_encoder),
        max_span_width=config.max_span_width,
        use_image=config.use_image,
        use_ib=config.uses_ib,
        use_cross_attention=config.uses_cross_attention,
        grid=predictor.model.attention_grid,
        grounding=predictor.model.grounds,
        backend=predictor.backend,
        quantization=predictor.quantization,
        version=__version__,
        limits=Limits(
            max_request_bytes=settings.max_request_bytes,
            max_image_pixels=settings.max_image_pixels,
            max_text_chars=settings.max_text_chars,
            max_tokens=predictor.max_tokens,
            max_images_per_post=image_cap.most,
            max_post_pixels=settings.post_pixel_limit,
        ),
    )


def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """The API (``/health``, ``/v1/model``, ``/v1/predict``) and the page (``/``)."""
    settings = settings or ServeSettings()
    grid = predictor.model.attention_grid
    images = ImageDecoder(settings, _decode_side(predictor))
    batcher: MicroBatcher[PostInput, Any] = MicroBatcher(
        lambda posts: predictor.predict_many(posts, batch_size=settings.max_batch),
        max_batch=settings.max_batch,
        max_wait_s=settings.batch_wait_ms / 1000,
        max_pending=settings.max_pending,
    )
    image_cap = _image_cap(predictor, settings)
    info = _model_info(predictor, settings, image_cap)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await anyio.to_thread.run_sync(batcher.close)
        images.close()

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
    app.state.pixel_budget = images.pixel_budget
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
    add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

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
        responses=ERRORS,
        summary="Entities of one post, with their attention over its image or images",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
                    "multipart/form-data": {"schema": FORM_SCHEMA},
                    "application/x-www-form-urlencoded": {"schema": TEXT_FORM_SCHEMA},
                },
            }
        },
    )
    async def predict(request: Request) -> JSONResponse:
        post = await read_post(request, settings, predictor.max_tokens, image_cap)
        listed = post.images is not None
        pictures: list[Image.Image] = []
        picture: Image.Image | None = None
        try:
            with ExitStack() as held:
                if post.images is not None:  # the files' bytes, as read_post gives them
                    pictures = await images.load_post(cast(list[bytes], post.images), held)
                    post = post.with_images(list(pictures))
                else:
                    picture = await images.load(post.image) if post.image is not None else None
                    pixels = picture.width * picture.height if picture else 0
                    held.enter_context(images.pixel_budget.hold(pixels))
                    post = post.with_image(picture)
                prediction = await batcher.run(post)
        except (BatcherOverloaded, BatcherClosed) as error:
            raise ApiError(503, "server busy", str(error)) from None
        except SmnerError as error:
            raise ApiError(422, "invalid post", str(error)) from None
        record = prediction.to_dict(explain=True)

        def crop_box(
            picture: Image.Image | None, status: ImageStatus
        ) -> tuple[float, float, float, float] | None:
            if grid is None or picture is None or status != ImageStatus.OK:
                return None  # the image was not attended to
            return predictor.processor.crop_box(picture.width, picture.height)

        if listed:
            statuses = prediction.image_statuses or []
            boxes = [crop_box(p, s) for p, s in zip(pictures, statuses, strict=True)]
            record["grid"] = grid if any(box is not None for box in boxes) else None
            record["crop_box"], record["crop_boxes"] = None, boxes
        else:
            box = crop_box(picture, prediction.image_status)
            record["grid"] = grid if box is not None else None
            record["crop_box"] = box
        # A post of one image (or none) is answered without the keys of a list of images.
        absent = set() if listed else {"image_statuses", "crop_boxes"}
        response = PredictResponse.model_validate(record)
        return JSONResponse(response.model_dump(mode="json", exclude=absent))

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
