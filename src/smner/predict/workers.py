"""Prediction in several processes of one machine: each loads the model once and predicts
whole windows of posts; results come back in input order.

Processes rather than threads because a model forward holds the interpreter for the Python
parts of the work (tokenizing, span enumeration, decoding), which threads would serialize.
Processes are started with ``spawn``: a forked copy of a process that has already run torch
can deadlock in its thread pools. The machine's threads are split between the workers, so
that N workers do not each start a pool as large as the machine and fight over the cores.

At most ``in_flight`` windows are out at a time, so memory stays bounded however long the
input is; a worker that dies (killed, out of memory) stops the run with an error instead of
leaving it waiting.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from smner.errors import SmnerError

#: Seconds between checks that every worker is still alive while waiting for a result.
_POLL_SECONDS = 1.0


def available_threads() -> int:
    """The threads this process may use: ``OMP_NUM_THREADS`` when set, else its CPUs."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, total: int | None = None) -> int:
    """Each worker's share of the machine's threads (at least one)."""
    return max(1, (total if total is not None else available_threads()) // workers)


@dataclass(frozen=True)
class WorkerSpec:
    """What each worker process needs to build its predictor.

    Fields:
        model_dir: a saved model folder (already resolved, e.g. downloaded from the Hub).
        device: ``cpu``, ``cuda``, ...
        batch_size: posts per model call.
        threads: torch threads of each worker.
        quantize: ``int8`` for int8 linear layers (see :mod:`smner.model.quantize`), or None.
    """

    model_dir: str
    device: str = "cpu"
    batch_size: int = 32
    threads: int = 1
    quantize: str | None = None


def _worker_main(spec: WorkerSpec, tasks: Any, results: Any, index: int) -> None:
    """A worker's life: load the model, then predict windows until told to stop (None)."""
    try:
        import torch

        torch.set_num_threads(spec.threads)
        from smner.predict.predictor import Predictor

        predictor = Predictor.from_pretrained(
            spec.model_dir, device=spec.device, quantize=spec.quantize
        )
    except Exception as exc:
        results.put((None, "error", f"worker {index} could not load the model: {exc}"))
        return
    while True:
        task = tasks.get()
        if task is None:
            return
        seq, window = task
        try:
            predicted = list(
                predictor.predict_stream(
                    window, spec.batch_size, window=max(1, len(window)), errors="record"
                )
            )
        except Exception as exc:
            results.put((seq, "error", f"worker {index}: {type(exc).__name__}: {exc}"))
            return
        results.put((seq, "ok", predicted))


class WorkerPool:
    """``workers`` processes predicting windows; use as a context manager.

    >>> with WorkerPool(WorkerSpec("runs/t17/best"), workers=2) as pool:
    ...     for window, results in pool.run(windows_of_posts):
    ...         ...
    """

    def __init__(self, spec: WorkerSpec, workers: int, in_flight: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.spec = spec
        self.workers = workers
        self.in_flight = in_flight or 2 * workers
        context = multiprocessing.get_context("spawn")
        self._tasks = context.Queue()
        self._results = context.Queue()
        self._processes = [
            context.Process(
                target=_worker_main,
                args=(spec, self._tasks, self._results, i),
                name=f"smner-worker-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]

    def __enter__(self) -> WorkerPool:
        for process in self._processes:
            process.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None:
            for _ in self._processes:
                self._tasks.put(None)
            for process in self._processes:
                process.join(timeout=60)
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join(timeout=10)
        self._tasks.close()
        self._results.close()

    def run(self, windows: Iterable[list[Any]]) -> Iterator[tuple[list[Any], list[Any]]]:
        """``(window, its results)`` for each window, in input order, as they are done."""
        source = iter(windows)
        pending: dict[int, list[Any]] = {}
        finished: dict[int, list[Any]] = {}
        submitted = emitted = 0
        exhausted = False
        while True:
            while not exhausted and len(pending) < self.in_flight:
                window = next(source, None)
                if window is None:
                    exhausted = True
                    break
                pending[submitted] = window
                self._submit(submitted, window)
                submitted += 1
            if not pending:
                return
            while emitted not in finished:
                seq, results = self._receive()
                finished[seq] = results
            yield pending.pop(emitted), finished.pop(emitted)
            emitted += 1

    def _submit(self, seq: int, window: list[Any]) -> None:
        """Send a window (records that could not be read pass through as they are)."""
        self._tasks.put((seq, window))

    def _receive(self) -> tuple[int, list[Any]]:
        while True:
            try:
                seq, status, payload = self._results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                for i, process in enumerate(self._processes):
                    if not process.is_alive():
                        raise SmnerError(
                            f"worker {i} stopped (exit code {process.exitcode}) before it "
                            "finished; with less memory per worker, try fewer --workers"
                        ) from None
                continue
            if status == "error":
                raise SmnerError(payload)
            return seq, payload
