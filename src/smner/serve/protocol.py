"""uvicorn's HTTP/1.1 protocol with the two guards it lacks: a connection cap and a deadline
for request headers.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``) and answers 503 beyond
``limit_concurrency`` once a request's headers are in, but a client that opens connections
and sends nothing, or sends its headers one byte a second, holds them for as long as it likes.
Here a connection beyond ``max_connections`` is closed at once, and one whose request headers
are not complete ``header_timeout_s`` after it opened (or after its previous response) is
answered 408 and closed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger(__name__)


def _raw_response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


_BUSY = _raw_response("503 Service Unavailable", b'{"error": "too many connections"}')
_SLOW = _raw_response("408 Request Timeout", b'{"error": "request headers not received in time"}')


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type[H11Protocol]:
    """An ``H11Protocol`` subclass enforcing both limits, for ``uvicorn.run(http=...)``."""

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                logger.warning("refused a connection: %d are open", len(self.connections) - 1)
                transport.write(_BUSY)
                transport.close()
                return
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None  # armed only while the next request's headers are due
            if not self.transport.is_closing():
                logger.info("closed a connection whose request headers did not arrive in time")
                self.transport.write(_SLOW)
                self.transport.close()

        def handle_events(self) -> None:
            before = self.cycle
            super().handle_events()
            if self.cycle is not before:
                self._disarm()  # a request's headers are in; the app's body deadline takes over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol
