"""ASGI middleware: body size and time limits, the Host check, the page's security headers."""

from __future__ import annotations

import threading

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smner.serve.errors import error_response


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
            await error_response(400, "ambiguous request framing", detail)(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await error_response(400, "invalid Content-Length")(scope, receive, send)
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
            detail = "too many request bodies are arriving; retry"
            response = error_response(503, "server busy", detail)
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
            response = error_response(408, "request body not received in time", detail)
            response.headers["connection"] = "close"
            await response(scope, receive, send)
        finally:
            self.budget.give(seen)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = {"max_request_bytes": self.max_bytes}
        await error_response(413, "request body too large", detail)(scope, receive, send)


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
                await error_response(400, "invalid Host header", detail)(scope, receive, send)
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
