"""A file of posts (or standard input) through a model to an output, in bounded memory.

Records are read one at a time, a window of them is predicted (in this process or in worker
processes), and the window's results are written at once, in input order, before the next
window is read. The pieces: :mod:`smner.data.records.read` (records in),
:mod:`smner.predict.streaming`
(windows), :mod:`smner.predict.workers` (processes), :mod:`smner.data.records.write` (staged,
resumable
output). What a chunk looks like in the output (JSONL, CoNLL, a table) is the caller's
:class:`Encoder`, so that this module knows nothing of output formats but their framing.

Files are read in full windows. Standard input may be a pipe that stays open: with
``flush_after`` set, its windows are cut when the input pauses as well as when they are full
(:func:`~smner.predict.streaming.live_windows`), so that each post's result is written soon
after the post came, not when a window has filled.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from smner.data.predictions import FailedPost
from smner.data.records import format_of, pyarrow_modules
from smner.data.records.read import (
    ReadOptions,
    RecordDigest,
    check_all,
    count_records,
    read_records,
    spool_stdin,
)
from smner.data.records.write import (
    InputIdentity,
    OutputOptions,
    Sink,
    complete_lines,
    open_output,
    partial_path,
)
from smner.errors import SmnerError
from smner.fileio import check_input_file
from smner.predict.streaming import DEFAULT_FLUSH_AFTER, DEFAULT_WINDOW, live_windows, windows


class Encoder(Protocol):
    """Turns the results of one window into output bytes."""

    #: Whether the output holds one line per record, so that a run can be resumed.
    line_per_record: bool

    def chunk(self, results: list[Any]) -> bytes: ...

    def end(self) -> bytes: ...


class JsonlEncoder:
    """One JSON record per line: each post's ``to_dict()`` (``error`` for a failed one)."""

    line_per_record = True

    def __init__(self, explain: bool = False) -> None:
        self.explain = explain

    def chunk(self, results: list[Any]) -> bytes:
        import json

        lines = [json.dumps(r.to_dict(explain=self.explain), ensure_ascii=False) for r in results]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    def end(self) -> bytes:
        return b""


@dataclass(frozen=True)
class FileJob:
    """One ``smner predict --input`` run.

    Fields:
        input: a JSONL or Parquet file (by suffix), or ``-`` for JSONL on standard input.
        output: a file (``.parquet`` is Parquet), ``-`` for standard output, or a FIFO.
        model_dir: the saved model folder.
        device: where the model runs.
        quantize: ``int8`` (int8 linear layers on the CPU) or ``bf16`` (bfloat16 autocast), see
            :mod:`smner.model.quantize`.
        batch_size: posts per model call.
        window: posts read ahead and sorted by length (memory and first-output delay).
        workers: processes, each with the model; 1 predicts in this process.
        strict: read and check every record before predicting any, and stop at the first
            bad one (instead of writing it with an ``error``).
        resume: go on after the records an unfinished run left in the output's staging file.
        max_input_bytes: refuse a larger input file (None: any size).
        progress: show a progress bar (posts and posts/s) on standard error.
        flush_after: with ``input="-"`` (and not ``strict``, which reads it all first), the
            seconds the first post of a window waits for others before the window is
            predicted and written (a pause in the input cuts it); None: full windows only.
    """

    input: str
    model_dir: str
    output: str = "-"
    device: str = "cpu"
    quantize: str | None = None
    batch_size: int = 32
    window: int = DEFAULT_WINDOW
    workers: int = 1
    strict: bool = False
    resume: bool = False
    max_input_bytes: int | None = None
    progress: bool = False
    flush_after: float | None = DEFAULT_FLUSH_AFTER

    @property
    def live(self) -> bool:
        """Whether windows are cut when the input pauses (see ``flush_after``)."""
        return self.input == "-" and not self.strict and self.flush_after is not None


@dataclass
class JobReport:
    """What a run did: records written now, records an earlier run had written, failures."""

    written: int = 0
    resumed_after: int = 0
    failed: int = 0
    first_error: str | None = None
    already_complete: bool = False
    output: str = "standard output"


WindowHook = Callable[[list[Any], list[Any]], None]


def run_file_job(
    job: FileJob,
    encoder: Encoder,
    on_window: WindowHook | None = None,
    load_predictor: Callable[[], Any] | None = None,
) -> JobReport:
    """Predict every record of ``job.input`` into ``job.output``; see :class:`FileJob`.

    ``on_window(posts, results)`` sees each window after it is written (image warnings,
    heatmaps); ``load_predictor`` builds the model of a one-process run (default: from
    ``job.model_dir``).
    """
    if job.workers > 1:
        from smner.predict.workers import check_worker_count

        check_worker_count(job.workers)
    if format_of(job.input) == "parquet" or format_of(job.output) == "parquet":
        pyarrow_modules()  # a missing extra is an error before anything is loaded
    if job.input != "-":
        what = "Parquet input" if format_of(job.input) == "parquet" else "JSONL input"
        check_input_file(job.input, job.max_input_bytes, what, "--max-input-mb")
    parquet_out = format_of(job.output) == "parquet"
    if parquet_out and not isinstance(encoder, JsonlEncoder):
        raise SmnerError(
            f"--output {job.output}: a Parquet file holds records, as --format jsonl writes "
            "them; conll and table are text formats"
        )
    finisher = None
    if parquet_out:
        from smner.data.records.parquet import jsonl_to_parquet

        finisher = jsonl_to_parquet
    source = InputIdentity.of(job.input)
    options = OutputOptions(job.resume, encoder.line_per_record, finisher, source)
    sink = open_output(job.output, options)
    stdin = spool_stdin() if job.input == "-" and job.strict else None
    report = JobReport(output=sink.where)
    try:
        if sink.complete:
            _check_complete(job)
            report.already_complete = True
            return report
        report.resumed_after = sink.done
        digest = RecordDigest(keep_from=sink.done)
        reading = ReadOptions(
            errors="raise" if job.strict else "record",
            max_bytes=job.max_input_bytes,
            skip=sink.done,
            digest=digest,
        )
        if job.strict:
            check_all(job.input, reading, stdin=stdin)
            if stdin is not None:
                stdin.seek(0)
        records = read_records(job.input, reading, stdin=stdin)
        if sink.done:
            records = _after_staged(records, digest, sink, job.input)
        with _predicted_windows(job, records, load_predictor) as results:
            bar = _progress(job, sink.done)
            try:
                for window, predicted in results:
                    if not window:
                        continue  # a live input's idle mark (see _chunks)
                    total = sink.done + report.written + len(predicted)
                    sink.write(encoder.chunk(predicted), (total, digest.after(total)))
                    _count(report, predicted)
                    if on_window is not None:
                        on_window(window, predicted)
                    bar.update(len(window))
            finally:
                bar.close()
        sink.write(encoder.end())
        sink.finish()
    finally:
        sink.close()
        if stdin is not None:
            stdin.close()
    return report


def _after_staged(
    records: Iterator[Any], digest: RecordDigest, sink: Sink, source: str
) -> Iterator[Any]:
    """``records`` once the ones a resumed staging file holds are read and found to be the
    records it was made from (checked here, before a model is loaded)."""
    first = next(records, None)
    staged = partial_path(Path(sink.where))
    done = sink.done
    start_again = f"delete {staged} and {staged.name}.input to start again"
    if digest.count < done:
        raise SmnerError(
            f"{staged} holds {done} records, more than the {digest.count} of {source}: it was "
            f"not made from this input; {start_again}"
        )
    if digest.after(done) != getattr(sink, "expected", None):
        raise SmnerError(
            f"{staged} was made from other records than the first {done} of {source}; "
            f"resume with the input it was made from, or {start_again}"
        )
    return records if first is None else itertools.chain([first], records)


def _check_complete(job: FileJob) -> None:
    """Refuse to call an output complete when it holds another number of records than the
    input (it was made from another input); standard input is not read to count it."""
    if job.input == "-":
        return
    wrote = _output_records(Path(job.output))
    has = count_records(job.input, scan=True)
    if wrote is not None and has is not None and wrote != has:
        raise SmnerError(
            f"--resume: {job.output} is a finished output of {wrote} records, and {job.input} "
            f"holds {has}: it was not made from this input; choose another --output, or "
            "delete it to predict again"
        )


def _output_records(path: Path) -> int | None:
    if format_of(path) == "parquet":
        _pa, pq = pyarrow_modules()
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # not Parquet: not an output this job wrote
            return None
    count, end = complete_lines(path)
    return count + (path.stat().st_size > end)


def _count(report: JobReport, predicted: list[Any]) -> None:
    report.written += len(predicted)
    for result in predicted:
        if isinstance(result, FailedPost):
            report.failed += 1
            if report.first_error is None:
                report.first_error = result.error


def _progress(job: FileJob, done: int) -> Any:
    from tqdm.auto import tqdm

    total = count_records(job.input) if job.progress else None
    return tqdm(
        total=total,
        initial=done,
        unit="post",
        desc="predict",
        disable=not job.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )


@contextlib.contextmanager
def _predicted_windows(
    job: FileJob, records: Iterator[Any], load_predictor: Callable[[], Any] | None
) -> Iterator[Iterator[tuple[list[Any], list[Any]]]]:
    """``(window, results)`` pairs, from this process or from a pool of workers."""
    if job.workers == 1:
        predictor = load_predictor() if load_predictor else _load(job)
        with contextlib.closing(_chunks(job, records)) as chunks:
            yield (
                (
                    window,
                    list(predictor.predict_stream(window, job.batch_size, len(window), "record")),
                )
                for window in chunks
            )
        return
    from smner.predict.workers import WorkerPool, WorkerSpec, threads_per_worker

    threads = threads_per_worker(job.workers)
    spec = WorkerSpec(job.model_dir, job.device, job.batch_size, threads, job.quantize)
    in_flight = 2 * job.workers
    # the pool reads in_flight windows before it gives back the first: after a window cut by
    # a pause, in_flight - 1 empty ones push it through (they are not written)
    with (
        WorkerPool(spec, job.workers, in_flight=in_flight) as pool,
        contextlib.closing(_chunks(job, records, idle_marks=in_flight - 1)) as chunks,
    ):
        yield pool.run(chunks)


def _chunks(job: FileJob, records: Iterator[Any], idle_marks: int = 0) -> Iterator[list[Any]]:
    """The windows of ``records``: full ones, or for a live input also those a pause cuts."""
    if job.live:
        assert job.flush_after is not None
        yield from live_windows(records, job.window, job.flush_after, idle_marks)
    else:
        yield from windows(records, job.window)


def _load(job: FileJob) -> Any:
    from smner.predict.predictor import Predictor

    return Predictor.from_pretrained(job.model_dir, device=job.device, quantize=job.quantize)
