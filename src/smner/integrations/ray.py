"""Ray Data: entities for a ``ray.data.Dataset`` of posts, on one machine or a cluster
(``pip install 'smner[ray]'``).

>>> import ray
>>> from smner.integrations.ray import predict_dataset
>>> posts = ray.data.read_json("s3://bucket/posts/", lines=True)   # id, text or tokens, image
>>> found = predict_dataset(posts, "org/smner-twitter2017", concurrency=8, num_gpus=1)
>>> found.write_parquet("s3://bucket/entities/")

Each actor of a pool loads the model once (:class:`PredictBatch`, a callable class given to
``map_batches``) and predicts the batches sent to it. Every record keeps its columns and gains
the keys of ``smner predict``'s JSONL output: ``tokens``, ``image_status`` and ``entities``,
plus ``error`` (null, or why the post could not be predicted; then the others are null).
The columns have fixed Arrow types, so that blocks from different actors join into one
dataset.

On a cluster the model must be reachable from every node: a Hub repo id, or a folder on
shared storage; so must the images, read by the actors (relative paths start at
``image_root``).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smner.data.posts import PostInput, post_from_record, post_words
from smner.data.predictions import FailedPost
from smner.errors import DataFormatError, SmnerError
from smner.extras import import_extra

#: The keys of a post in a record; nulls there mean the key is absent.
POST_KEYS = ("id", "text", "tokens", "image")
#: The columns predictions add, in this order.
ADDED = ("tokens", "image_status", "entities", "error")
#: Seconds to wait for the cluster ``RAY_ADDRESS`` names (Ray itself retries for minutes);
#: the environment variable ``SMNER_RAY_CONNECT_TIMEOUT`` sets another number.
RAY_CONNECT_SECONDS = 10.0


def _ray() -> Any:
    return import_extra("ray", "ray", "Prediction with Ray Data")


def entity_type(explain: bool = False, grounds: bool = False) -> Any:
    """The Arrow type of the ``entities`` column (as ``Mention.to_dict`` writes them; a
    grounding model adds ``box`` and ``box_score``)."""
    import pyarrow as pa

    fields = [
        pa.field("text", pa.string()),
        pa.field("type", pa.string()),
        pa.field("start", pa.int64()),
        pa.field("end", pa.int64()),
        pa.field("char_start", pa.int64()),
        pa.field("char_end", pa.int64()),
        pa.field("score", pa.float64()),
    ]
    if grounds:
        fields.append(pa.field("box", pa.list_(pa.float64())))
        fields.append(pa.field("box_score", pa.float64()))
    if explain:
        fields.append(pa.field("attention", pa.list_(pa.list_(pa.float64()))))
        fields.append(pa.field("global_attention", pa.float64()))
    return pa.list_(pa.struct(fields))


class PredictBatch:
    """The callable class of ``map_batches``: one :class:`~smner.predict.predictor.Predictor` per
    actor,
    a ``pyarrow.Table`` of records in, the same table with the prediction columns out."""

    def __init__(
        self,
        model: str,
        device: str = "cpu",
        batch_size: int = 32,
        explain: bool = False,
        image_root: str | None = None,
        revision: str | None = None,
    ) -> None:
        from smner.predict.predictor import Predictor

        self.predictor = Predictor.from_pretrained(model, device=device, revision=revision)
        self.grounds = self.predictor.model.grounds
        self.batch_size = batch_size
        self.explain = explain
        self.image_root = Path(image_root) if image_root is not None else None

    def _post(self, row: dict[str, Any], number: int) -> PostInput | FailedPost:
        """The row's post, or why it cannot be predicted (no file or line to name: its id)."""
        record = {k: v for k, v in row.items() if not (v is None and k in POST_KEYS)}
        where = f"record {record['id']!r}" if "id" in record else f"record {number} of its batch"
        try:
            post = post_from_record(record, "dataset", None, self.image_root, where)
            post_words(post, self.predictor.max_tokens)
        except DataFormatError as exc:
            return FailedPost(str(exc).removeprefix("dataset: "), {}, record.get("id"))
        except SmnerError as exc:
            return FailedPost(f"{where}: {exc}", {}, record.get("id"))
        return post

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        posts = [self._post(row, i) for i, row in enumerate(rows)]
        results = self.predictor.predict_stream(
            posts, self.batch_size, window=max(1, len(posts)), errors="record"
        )
        columns: dict[str, list[Any]] = {name: [] for name in ADDED}
        for row, result in zip(rows, results, strict=True):
            if isinstance(result, FailedPost):
                columns["tokens"].append(row.get("tokens"))
                columns["image_status"].append(None)
                columns["entities"].append(None)
                columns["error"].append(result.error)
                continue
            record = result.to_dict(explain=self.explain)
            columns["tokens"].append(record["tokens"])
            columns["image_status"].append(record["image_status"])
            columns["entities"].append(record["entities"])
            columns["error"].append(None)
        types = {
            "tokens": pa.list_(pa.string()),
            "image_status": pa.string(),
            "entities": entity_type(self.explain, self.grounds),
            "error": pa.string(),
        }
        table = batch
        for name in ADDED:
            values = pa.array(columns[name], type=types[name])
            if name in table.column_names:
                index = table.column_names.index(name)
                table = table.set_column(index, pa.field(name, types[name]), values)
            else:
                table = table.append_column(pa.field(name, types[name]), values)
        return table


def predict_dataset(
    dataset: Any,
    model: str | Path,
    *,
    batch_size: int = 32,
    concurrency: int | tuple[int, int] = 1,
    num_gpus: float = 0,
    num_cpus: float | None = None,
    device: str | None = None,
    explain: bool = False,
    image_root: str | Path | None = None,
    revision: str | None = None,
) -> Any:
    """``dataset`` (a ``ray.data.Dataset`` of post records: ``id``, ``text`` or ``tokens``,
    ``image``) with ``tokens``, ``image_status``, ``entities`` and ``error`` added.

    Args:
        model: a saved model folder or a Hub repo id, loaded once by each actor.
        batch_size: records per actor call, and posts per model call.
        concurrency: actors in the pool: a number, or ``(min, max)`` to autoscale.
        num_gpus: GPUs for each actor (the model then runs on ``cuda``).
        num_cpus: CPUs reserved for each actor (Ray's default: 1).
        device: where the model runs (default: ``cuda`` with GPUs, else ``cpu``).
        explain: add each entity's ``attention`` over the image grid.
        image_root: the folder relative image paths start at (default: each actor's
            working folder).
        revision: the Hub revision of ``model``.

    The order of the records is kept when the dataset's execution options ask for it
    (``DataContext.get_current().execution_options.preserve_order = True``).
    """
    ray = _ray()
    import_extra("pyarrow", "ray", "Prediction with Ray Data")
    if isinstance(concurrency, tuple):
        low, high = concurrency
        compute = ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    else:
        compute = ray.data.ActorPoolStrategy(size=concurrency)
    resources: dict[str, Any] = {}
    if num_gpus:
        resources["num_gpus"] = num_gpus
    if num_cpus is not None:
        resources["num_cpus"] = num_cpus
    return dataset.map_batches(
        PredictBatch,
        fn_constructor_kwargs={
            "model": str(model),
            "device": device or ("cuda" if num_gpus else "cpu"),
            "batch_size": batch_size,
            "explain": explain,
            "image_root": str(image_root) if image_root is not None else None,
            "revision": revision,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=compute,
        udf_modifying_row_count=False,
        **resources,
    )


# --- `smner predict --engine ray` ----------------------------------------------------------


@dataclass(frozen=True)
class RayFileJob:
    """One ``smner predict --engine ray`` run.

    Fields:
        input: a JSONL or Parquet file, or a folder of them.
        output: a file (``.parquet`` is Parquet) or ``-``, written in input order through
            this process; or a folder (an existing one, or a path ending in ``/``), where
            Ray's writers put one file per block, in the input's format.
        model: a saved model folder or a Hub repo id (``org/name@revision`` too).
        batch_size, workers, device, explain: as for the local engine; workers are actors.
    """

    input: str
    model: str
    output: str = "-"
    batch_size: int = 32
    workers: int = 1
    device: str = "cpu"
    explain: bool = False


def _input_format(path: Path) -> str:
    if path.is_dir():
        suffixes = {p.suffix.lower() for p in path.rglob("*") if p.is_file()}
        if suffixes & {".parquet", ".pq"}:
            return "parquet"
        if suffixes & {".jsonl", ".json"}:
            return "jsonl"
        raise SmnerError(f"--input {path}: the folder holds no .jsonl, .json or .parquet file")
    if not path.is_file():
        raise SmnerError(f"--input {path}: file not found")
    return "parquet" if path.suffix.lower() in (".parquet", ".pq") else "jsonl"


def _start(ray: Any, workers: int) -> None:
    """Join the cluster ``RAY_ADDRESS`` names, or start a local Ray, unless one is running.

    On one machine, actors that take every CPU leave none for the tasks that read the input,
    and the run would wait forever: that is refused. (A cluster may grow; it is not checked.)
    """
    address = os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        if address is None:
            _init(ray, None)
        else:
            _join(ray, address, _connect_seconds())
    if address:
        return
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers >= cpus:
        raise SmnerError(
            f"--workers {workers}: the local Ray has {cpus} CPUs, and each worker takes one; "
            f"reading the input needs one more (use at most {max(1, cpus - 1)})"
        )


def _init(ray: Any, address: str | None) -> None:
    # Joining from a thread (see _join) makes Ray warn that it sets no SIGTERM handler.
    level = "warning" if address is None else "error"
    ray.init(address=address, include_dashboard=False, logging_level=level, log_to_driver=False)


def _connect_seconds() -> float:
    value = os.environ.get("SMNER_RAY_CONNECT_TIMEOUT", "")
    try:
        seconds = float(value) if value else RAY_CONNECT_SECONDS
    except ValueError:
        raise SmnerError(
            f"SMNER_RAY_CONNECT_TIMEOUT={value}: expected a number of seconds"
        ) from None
    return max(seconds, 0.1)


def _join(ray: Any, address: str, seconds: float) -> None:
    """Connect to ``address`` within ``seconds``, or raise one line naming it.

    The host and port are tried first (a refused or unreachable address fails at once,
    before Ray logs its retries); ``ray.init`` then runs in a thread that is given up on
    when the cluster does not answer in time, since Ray has no timeout of its own for it.
    """
    fix = "start the cluster (ray start --head) or unset RAY_ADDRESS to use a local Ray"
    outcome: list[BaseException] = []

    def connect() -> None:
        try:
            _probe(address, seconds)
            _init(ray, address)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, name="smner-ray-connect", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise SmnerError(
            f"RAY_ADDRESS={address}: no Ray cluster answered within {seconds:g} s; {fix}"
        )
    if outcome:
        error = outcome[0]
        if isinstance(error, SmnerError):
            raise SmnerError(f"RAY_ADDRESS={address}: {error}; {fix}") from None
        text = str(error).strip().splitlines()
        reason = text[0] if text else type(error).__name__
        raise SmnerError(
            f"RAY_ADDRESS={address}: cannot connect to Ray ({reason}); {fix}"
        ) from None


def _probe(address: str, seconds: float) -> None:
    """Open and close a TCP connection to the ``host:port`` of ``address`` (``ray://`` and
    other schemes allowed); ``auto`` and ``local`` are left to Ray."""
    if address in ("auto", "local"):
        return
    where = address.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = where.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise SmnerError("expected host:port")
    try:
        with socket.create_connection((host, int(port)), timeout=min(seconds, 5.0)):
            pass
    except TimeoutError:
        raise SmnerError(f"no answer from {host}:{port}") from None
    except OSError as exc:
        raise SmnerError(f"cannot reach {host}:{port} ({exc.strerror or exc})") from None


def _records(table: Any) -> Iterator[dict[str, Any]]:
    """Output records as the local engine writes them: absent keys are not written."""
    for row in table.to_pylist():
        yield {k: v for k, v in row.items() if not (v is None and k in (*POST_KEYS, *ADDED))}


def predict_files(job: RayFileJob) -> int | None:
    """Predict ``job.input`` with Ray Data into ``job.output``; the number of records written
    through this process (None for a folder, which Ray's writers fill: counting it would run
    the predictions again)."""
    ray = _ray()
    source = Path(job.input)
    fmt = _input_format(source)
    _start(ray, job.workers)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = sys.stderr.isatty()
    if fmt == "parquet":
        dataset = ray.data.read_parquet(str(source))
    else:
        dataset = ray.data.read_json(str(source), lines=True)
    model, _, revision = job.model.partition("@")
    found = predict_dataset(
        dataset,
        model,
        batch_size=job.batch_size,
        concurrency=job.workers,
        num_gpus=1 if job.device.startswith("cuda") else 0,
        device=job.device,
        explain=job.explain,
        image_root=source if source.is_dir() else source.parent,
        revision=revision or None,
    )
    output = job.output
    if output.endswith("/") or Path(output).is_dir():
        if fmt == "parquet":
            found.write_parquet(output)
        else:
            found.write_json(output)
        return None
    return _write_in_order(found, output)


def _write_in_order(found: Any, output: str) -> int:
    """The records through this process, in input order, into a file or standard output."""
    from smner.data.records import format_of
    from smner.data.records.write import OutputOptions, open_output

    finisher = None
    if format_of(output) == "parquet":
        from smner.data.records.parquet import jsonl_to_parquet

        finisher = jsonl_to_parquet
    sink = open_output(output, OutputOptions(finisher=finisher))
    count = 0
    try:
        for table in found.iter_batches(batch_format="pyarrow", batch_size=1024):
            lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in _records(table)]
            sink.write("".join(lines).encode("utf-8"))
            count += len(lines)
        sink.finish()
    finally:
        sink.close()
    return count
