"""Micro-batching: concurrent requests share one model call.

A forward pass over 16 posts costs far less than 16 passes over one post, so requests that
arrive together are queued and handed to the model as one batch by a single worker thread. The
thread also keeps the (blocking, CPU-heavy) model off the event loop, and being the only caller
it needs no lock around the model.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

logger = logging.getLogger(__name__)


class BatcherOverloaded(RuntimeError):
    """The queue is full: more posts wait than the server accepts (answered with 503)."""


class BatcherClosed(RuntimeError):
    """The batcher was closed (the server is shutting down)."""


_STOP = object()


class MicroBatcher(Generic[In, Out]):
    """Queue items, run them through ``run_batch`` in batches, and resolve each item's future.

    ``run_batch`` receives up to ``max_batch`` items and returns one result per item, in order.
    After the first item of a batch arrives the worker waits at most ``max_wait_s`` for more;
    items that queued while the previous batch ran are taken at once. If a batch fails it is
    retried one item at a time, so a bad item fails only its own future. At most ``max_pending``
    items wait, which bounds the memory that queued requests (and their images) can hold.
    """

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out]],
        max_batch: int = 16,
        max_wait_s: float = 0.005,
        max_pending: int = 256,
        name: str = "smner-batcher",
    ) -> None:
        if max_batch < 1 or max_pending < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_pending must be >= 1 and max_wait_s >= 0")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.name = name
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_pending)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, item: In) -> Future[Out]:
        """Queue ``item``; raises BatcherOverloaded when full, BatcherClosed after close()."""
        future: Future[Out] = Future()
        with self._lock:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if self._thread is None:  # started lazily: creating an app starts no thread
                self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait((item, future))
            except queue.Full:
                raise BatcherOverloaded("too many requests are waiting; retry later") from None
        return future

    async def run(self, item: In) -> Out:
        """Submit ``item`` and await its result.

        Cancelling the await cancels the item: it stays queued (and counts toward
        ``max_pending``) until the worker reaches it and drops it unprocessed.
        """
        return await asyncio.wrap_future(self.submit(item))

    def close(self, timeout: float | None = 10.0) -> None:
        """Refuse new items, let the queued ones finish, then stop the worker thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        self._queue.put(_STOP)  # blocks only while the queue is full; the worker drains it
        thread.join(timeout)

    # --- worker ----------------------------------------------------------------------------

    def _work(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is _STOP:
                break
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    remaining = deadline - time.monotonic()
                    entry = (
                        self._queue.get(timeout=remaining)
                        if remaining > 0
                        else self._queue.get_nowait()
                    )
                except queue.Empty:
                    break
                if entry is _STOP:
                    stopping = True
                    break
                batch.append(entry)
            self._run(batch)  # type: ignore[arg-type]
        self._fail_leftovers()

    def _run(self, batch: list[tuple[In, Future[Out]]]) -> None:
        # A future cancelled while queued (its client went away) is dropped here.
        live = [(item, f) for item, f in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = list(self.run_batch([item for item, _ in live]))
            if len(results) != len(live):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(live)}")
        except Exception as error:
            if len(live) == 1:
                live[0][1].set_exception(error)
                return
            logger.debug("batch of %d failed (%s); retrying one by one", len(live), error)
            for item, future in live:
                try:
                    future.set_result(self.run_batch([item])[0])
                except Exception as single_error:
                    future.set_exception(single_error)
            return
        except BaseException as error:  # e.g. KeyboardInterrupt: no future may hang forever
            for _, future in live:
                future.set_exception(error)
            raise
        for (_, future), result in zip(live, results, strict=True):
            future.set_result(result)

    def _fail_leftovers(self) -> None:
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if entry is not _STOP:
                _, future = entry  # type: ignore[misc]
                if future.set_running_or_notify_cancel():
                    future.set_exception(BatcherClosed("the server is shutting down"))
