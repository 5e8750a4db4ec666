"""Errors as the API answers them: always JSON ``{"error", "detail"}``, never a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

# The name these records had when the handlers lived in app.py; log filters may rely on it.
logger = logging.getLogger("smner.serve.app")


class ApiError(Exception):
    """An error answered as JSON ``{"error": error, "detail": detail}`` with ``status``."""

    def __init__(
        self, status: int, error: str, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail
        self.headers = headers or {}

    def for_image(self, index: int) -> ApiError:
        """The same error about image ``index`` of a post's list: ``detail`` becomes an
        object whose ``image`` names it (a string detail moves to its ``reason``), so that a
        client can tell which image to fix."""
        if isinstance(self.detail, dict):
            detail = {"image": index, **self.detail}
        elif self.detail is None:
            detail = {"image": index}
        else:
            detail = {"image": index, "reason": self.detail}
        return ApiError(self.status, self.error, detail, self.headers)


def error_response(status: int, error: str, detail: Any = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def validation_detail(error: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    # No "input" (it may be megabytes of base64) and no "ctx" (it may hold exception objects).
    return [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]


def add_error_handlers(app: FastAPI) -> None:
    """Every error, expected or not, as JSON ``{"error", "detail"}``."""

    @app.exception_handler(ApiError)
    async def apierror_response(_: Request, error: ApiError) -> JSONResponse:
        response = error_response(error.status, error.error, error.detail)
        response.headers.update(error.headers)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def httperror_response(_: Request, error: StarletteHTTPException) -> JSONResponse:
        response = error_response(error.status_code, str(error.detail))
        response.headers.update(error.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def validationerror_response(_: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid request", validation_detail(error))

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, _: ClientDisconnect) -> JSONResponse:
        # Nobody is left to answer; one line, not a traceback.
        client = request.client.host if request.client else "a client"
        logger.info("%s disconnected before its request body was complete", client)
        return error_response(400, "client disconnected")

    @app.exception_handler(Exception)
    async def internalerror_response(_: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error while answering a request", exc_info=error)
        return error_response(500, "internal server error")
