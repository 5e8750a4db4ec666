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

Each worker holds a whole model, so their number is bounded twice before they run: by the
CPUs (more processes than cores only wait for each other), and by memory: the first worker
loads its model and reports its resident size, and the others start only if that many more
fit in the memory the system has available.
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


def check_worker_count(workers: int, cpus: int | None = None) -> None:
    """Refuse more workers than the machine has CPUs (``os.cpu_count()``)."""
    cpus = cpus if cpus is not None else (os.cpu_count() or 1)
    if workers > cpus:
        raise SmnerError(
            f"--workers {workers}: this machine has {cpus} CPUs, and each worker loads its own "
            f"model and needs a core; use at most --workers {cpus}"
        )


def resident_bytes() -> int | None:
    """This process's resident memory (``/proc/self/statm``), or None where it is unknown."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def available_bytes() -> int | None:
    """Memory the system can give without swapping (``MemAvailable`` of ``/proc/meminfo``),
    or None where it is unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_worker_memory(more: int, model_rss: int | None, available: int | None) -> None:
    """Refuse to start ``more`` workers of ``model_rss`` resident bytes each (measured on the
    first, once its model is loaded) when they do not fit in ``available`` bytes; unknown
    numbers refuse nothing."""
    if model_rss is None or available is None or more <= 0 or model_rss <= 0:
        return
    need = more * model_rss
    if need > available:
        mib = 2**20
        raise SmnerError(
            f"--workers {more + 1}: each worker holds {model_rss // mib} MiB once its model is "
            f"loaded, and the other {more} need {need // mib} MiB where {available // mib} MiB "
            f"is available (MemAvailable in /proc/meminfo); use at most --workers "
            f"{available // model_rss + 1}"
        )


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
        quantize: ``int8`` or ``bf16`` (see :mod:`smner.model.quantize`), or None.
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
    results.put((None, "loaded", resident_bytes()))
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

    def __init__(
        self,
        spec: WorkerSpec,
        workers: int,
        in_flight: int | None = None,
        available: Any = available_bytes,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        #: ``() -> bytes of memory available`` (or None), asked once the first worker is loaded
        self.available = available
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
        first, *others = self._processes
        first.start()
        try:
            rss = self._loaded()
            if others:
                check_worker_memory(len(others), rss, self.available())
        except BaseException:
            self.__exit__(SmnerError, None, None)
            raise
        for process in others:
            process.start()
        return self

    def _loaded(self) -> int | None:
        """Wait for the first worker's model; its resident memory (None: unknown)."""
        while True:
            try:
                _seq, status, payload = self._results.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                process = self._processes[0]
                if not process.is_alive():
                    raise SmnerError(
                        f"worker 0 stopped (exit code {process.exitcode}) while loading the model"
                    ) from None
                continue
            if status == "error":
                raise SmnerError(payload)
            return payload if isinstance(payload, int) else None

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
                if process.pid is not None:
                    process.join(timeout=60)
        for process in self._processes:
            if process.pid is None:
                continue  # never started: the first worker's load was refused
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
            if status == "loaded":
                continue
            return seq, payload
