"""Prediction over a stream of posts in bounded memory, results in input order.

Posts are read a *window* at a time (a few thousand); inside a window they are sorted by
length and cut into batches, so that short posts do not pay for the padding of long ones, and
the window's results come out in the order the posts came in. Memory grows with the window,
never with the input; the first results appear once the first window is predicted.

A post the model cannot take becomes a :class:`FailedPost` (with ``errors="record"``) that
keeps its place in the output, so that a stream never loses a record.

A live input (a pipe that stays open, ``tail -f``) would fill a window only after hours:
:func:`live_windows` reads it in a thread and cuts a window when it is full *or* when its
first post has waited ``flush_after`` seconds, so a pause in the input (or a slow trickle)
never holds a post back for longer than that; posts that are already waiting when a window is
cut go into it, so a fast input still makes full windows.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from smner.data.posts import InvalidPost, PostInput, as_post
from smner.data.predictions import ErrorPolicy, FailedPost
from smner.errors import SmnerError

if TYPE_CHECKING:
    from smner.data.predictions import PostPrediction

T = TypeVar("T")

#: Posts read ahead and sorted by length; memory and the delay before the first output grow
#: with it, and the padding saved by sorting shrinks without it.
DEFAULT_WINDOW = 1024
#: Seconds the first post of a window of a live input waits for others before the window is
#: predicted anyway (``smner predict --flush-after``).
DEFAULT_FLUSH_AFTER = 1.0


def windows(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last may be shorter), read lazily."""
    if size < 1:
        raise ValueError(f"window size must be at least 1, got {size}")
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


@dataclass(frozen=True)
class _End:
    """What the reader thread puts last: the end of the input, or the error that stopped it."""

    error: BaseException | None = None


class Arrivals(Protocol):
    """Where :func:`cut_windows` takes items from: ``(arrival time, item)`` pairs and, last,
    one end marker; ``get`` raises :class:`queue.Empty` when ``timeout`` passes (0: now)."""

    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...


def cut_windows(
    arrivals: Arrivals,
    size: int,
    flush_after: float,
    clock: Callable[[], float] = time.monotonic,
    idle_marks: int = 0,
) -> Iterator[list[Any]]:
    """Windows of at most ``size`` items from ``arrivals``, each cut when it is full, when the
    input ends, or once its first item has waited ``flush_after`` seconds (by ``clock``, from
    the item's arrival time); items already waiting then join it without delay.

    A consumer that reads windows ahead before it gives back results (a pool with several
    windows in flight) would sit on a window cut by a pause until the next post came:
    ``idle_marks`` empty windows are yielded after each such window, one whenever nothing is
    waiting, so that it has read that many more and gives it back.
    """
    if size < 1:
        raise ValueError(f"window size must be at least 1, got {size}")
    if flush_after < 0:
        raise ValueError(f"flush_after must be at least 0, got {flush_after}")
    window: list[Any] = []
    deadline = 0.0
    owed = 0
    while True:
        try:
            if window:
                left = deadline - clock()
                entry = arrivals.get(timeout=left) if left > 0 else arrivals.get(block=False)
            elif owed:
                entry = arrivals.get(block=False)
            else:
                entry = arrivals.get()
        except queue.Empty:
            if window:
                yield window
                window, owed = [], idle_marks
            else:
                owed -= 1
                yield []
            continue
        if isinstance(entry, _End):
            if window:
                yield window
            if entry.error is not None:
                raise entry.error
            return
        arrived, item = entry
        if not window:
            deadline = arrived + flush_after
            owed = 0
        window.append(item)
        if len(window) >= size:
            yield window
            window = []


def live_windows(
    items: Iterable[T],
    size: int,
    flush_after: float = DEFAULT_FLUSH_AFTER,
    idle_marks: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[list[T]]:
    """:func:`cut_windows` over ``items``, which a thread reads (and may block on) meanwhile.

    The thread starts when the first window is asked for and holds at most ``size`` items
    read ahead; an error it meets is raised here, after the items read before it. Closing
    the generator stops the thread at its next item (one blocked on its input ends with the
    process: it is a daemon).
    """
    if size < 1:
        raise ValueError(f"window size must be at least 1, got {size}")
    arrivals: queue.Queue[Any] = queue.Queue(maxsize=size)
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_ahead,
        args=(items, arrivals, stop, clock),
        name="smner-live-reader",
        daemon=True,
    )
    reader.start()
    try:
        yield from cut_windows(arrivals, size, flush_after, clock, idle_marks)
    finally:
        stop.set()


def _read_ahead(
    items: Iterable[Any], arrivals: queue.Queue[Any], stop: threading.Event, clock: Any
) -> None:
    """Put ``(arrival time, item)`` for each item, then an :class:`_End`, until ``stop``."""

    def put(entry: Any) -> bool:
        while not stop.is_set():
            try:
                arrivals.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for item in items:
            if not put((clock(), item)):
                return
    except BaseException as exc:  # raised in the consumer's thread, where it can be handled
        put(_End(exc))
        return
    put(_End())


def approximate_length(post: PostInput) -> int:
    """Characters of the post, without tokenizing it: enough to sort posts by length."""
    if post.tokens is not None:
        return sum(len(str(t)) + 1 for t in post.tokens)
    return len(post.text or "")


def length_batches(posts: Sequence[PostInput], batch_size: int) -> list[list[int]]:
    """Positions of ``posts`` sorted by length (stable), cut into batches of ``batch_size``."""
    order = sorted(range(len(posts)), key=lambda i: approximate_length(posts[i]))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def predict_window(
    items: Sequence[Any],
    predict_batch: Callable[[list[PostInput]], list[PostPrediction]],
    check: Callable[[PostInput], object],
    batch_size: int,
    errors: ErrorPolicy = "raise",
    first_position: int = 0,
) -> list[PostPrediction | FailedPost]:
    """Predictions for one window of posts, in its order.

    Every post is converted and checked (``check`` raises :class:`SmnerError` for a post the
    model cannot take) before any batch is predicted. With ``errors="raise"`` the first bad
    post raises, naming its position (counted from ``first_position``); with ``"record"`` it
    becomes a :class:`FailedPost`, and a batch that fails as a whole is predicted again one
    post at a time, so that only the posts that fail alone are lost. A :class:`FailedPost`
    among ``items`` (a record a reader could not read) is passed through as it is.
    """
    results: list[PostPrediction | FailedPost | None] = [None] * len(items)
    good: list[PostInput] = []
    places: list[int] = []
    for offset, item in enumerate(items):
        if isinstance(item, FailedPost):
            results[offset] = item
            continue
        try:
            post = as_post(item, first_position + offset)
        except InvalidPost as exc:  # its message names the position
            if errors == "raise":
                raise
            known = item.get("id") if isinstance(item, Mapping) else None
            results[offset] = FailedPost(str(exc), {} if known is None else {"id": known}, known)
            continue
        try:
            check(post)
        except SmnerError as exc:
            message = f"post {first_position + offset}: {exc}"
            if errors == "raise":
                raise SmnerError(message) from None
            results[offset] = FailedPost.of(post, message)
            continue
        good.append(post)
        places.append(offset)
    for batch in length_batches(good, batch_size):
        posts = [good[i] for i in batch]
        for i, result in zip(batch, _predict_or_isolate(posts, predict_batch, errors), strict=True):
            results[places[i]] = result
    return results  # type: ignore[return-value]


def _predict_or_isolate(
    posts: list[PostInput],
    predict_batch: Callable[[list[PostInput]], list[PostPrediction]],
    errors: ErrorPolicy,
) -> list[PostPrediction | FailedPost]:
    if errors == "raise":
        return list(predict_batch(posts))
    try:
        return list(predict_batch(posts))
    except Exception as exc:  # any failure is recorded on its post, not lost
        if len(posts) == 1:
            return [FailedPost.of(posts[0], f"{type(exc).__name__}: {exc}")]
    return [_predict_or_isolate([post], predict_batch, errors)[0] for post in posts]


def predict_stream(
    posts: Iterable[Any],
    predict_batch: Callable[[list[PostInput]], list[PostPrediction]],
    check: Callable[[PostInput], object],
    batch_size: int = 32,
    window: int = DEFAULT_WINDOW,
    errors: ErrorPolicy = "raise",
) -> Iterator[PostPrediction | FailedPost]:
    """Predictions for ``posts`` (any iterable, read lazily), yielded in input order, one
    window at a time (see :func:`predict_window`)."""
    if errors not in ("raise", "record"):
        raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}")
    position = 0
    for chunk in windows(posts, window):
        yield from predict_window(chunk, predict_batch, check, batch_size, errors, position)
        position += len(chunk)
