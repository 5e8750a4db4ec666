"""pandas views of data files and predictions (``pip install 'smner[pandas]'``).

>>> import smner
>>> posts = smner.read_conll("data/twitter2017/valid.txt")        # one row per post
>>> posts[posts.entities.map(len) > 2].head()
>>> predictor = smner.Predictor.from_pretrained("runs/t17/best")
>>> predictor.predict_dataframe(frame, text="text", image="photo", explode=True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from smner.data.posts import PostInput
from smner.data.predictions import PostPrediction
from smner.errors import MissingExtra, SmnerError

if TYPE_CHECKING:
    import pandas as pd


class PostPredictor(Protocol):
    """What :func:`predict_dataframe` needs of a predictor (the Predictor is one): the data
    layer names the shape, not the class above it."""

    def predict_many(self, posts: list[PostInput], batch_size: int) -> list[PostPrediction]: ...


#: The columns of one entity in ``predict_dataframe(..., explode=True)``.
ENTITY_COLUMNS = ("text", "type", "start", "end", "char_start", "char_end", "score")
#: The columns of :func:`read_conll`.
CONLL_COLUMNS = ("id", "image_id", "tokens", "tags", "entities", "line")


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise MissingExtra(
            "this needs pandas, an optional dependency of smner: pip install 'smner[pandas]'"
        ) from None
    return pandas


def _missing(value: Any) -> bool:
    """None, NaN or pandas' NA/NaT: an empty cell."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return type(value).__name__ in ("NAType", "NaTType")


def _column(frame: pd.DataFrame, name: str, role: str) -> None:
    if name not in frame.columns:
        columns = ", ".join(map(str, frame.columns)) or "none"
        raise SmnerError(f"{role} column {name!r} is not in the frame (its columns: {columns})")


def _posts(
    frame: pd.DataFrame, text: str, image: str | None, tokens: str | None
) -> list[PostInput]:
    source = tokens if tokens is not None else text
    _column(frame, source, "the tokens" if tokens is not None else "the text")
    if image is not None:
        _column(frame, image, "the image")
    posts = []
    images = frame[image] if image is not None else [None] * len(frame)
    for index, value, picture in zip(frame.index, frame[source], images, strict=True):
        where = f"row {index!r}"
        if _missing(value):
            raise SmnerError(f"{where}: column {source!r} is empty")
        if tokens is not None:
            if isinstance(value, str) or not hasattr(value, "__iter__"):
                raise SmnerError(f"{where}: column {tokens!r} must hold lists of tokens")
            post = PostInput(tokens=[str(t) for t in value])
        elif isinstance(value, str):
            post = PostInput(text=value)
        else:
            raise SmnerError(f"{where}: column {text!r} must hold strings, not {value!r}")
        if not _missing(picture):
            post.image = picture
        posts.append(post)
    return posts


def predict_dataframe(
    predictor: PostPredictor,
    frame: pd.DataFrame,
    text: str = "text",
    image: str | None = None,
    tokens: str | None = None,
    explode: bool = False,
    batch_size: int = 32,
) -> pd.DataFrame:
    """A copy of ``frame`` with the predictions of each row's post.

    ``text`` names the column of raw texts (or ``tokens`` a column of token lists, used
    instead); ``image`` optionally a column of image paths, bytes or PIL images (empty cells:
    no image). The result adds ``entities`` (a list of dicts per row, as in the JSONL of
    ``smner predict``) and, with an image column, ``image_status``.

    With ``explode=True`` there is one row per entity instead, with the row's other columns
    and the entity's ``text``, ``type``, ``start``, ``end``, ``char_start``, ``char_end`` and
    ``score``; a post column with one of those names is renamed ``post_<name>`` (so the
    post's ``text`` becomes ``post_text``). Posts without entities have no row there. The
    index is the input's, repeated for each entity of a row.
    """
    pd = _pandas()
    predictions = predictor.predict_many(_posts(frame, text, image, tokens), batch_size)
    out = frame.copy()
    out["entities"] = [[m.to_dict() for m in p.entities] for p in predictions]
    if image is not None:
        out["image_status"] = [p.image_status for p in predictions]
    if not explode:
        return out
    rows = out.explode("entities")
    rows = rows[rows["entities"].map(lambda e: isinstance(e, Mapping))]
    details = pd.DataFrame(list(rows["entities"]), columns=list(ENTITY_COLUMNS))
    rows = rows.drop(columns=["entities"])
    rows = rows.rename(columns={c: f"post_{c}" for c in ENTITY_COLUMNS if c in rows.columns})
    for column in ENTITY_COLUMNS:
        rows[column] = details[column].to_numpy()
    dtypes = {c: "int64" for c in ("start", "end", "char_start", "char_end")}
    return rows.astype({**dtypes, "score": "float64", "text": "object", "type": "object"})


def read_conll(path: str | Path, label_aliases: Mapping[str, str] | None = None) -> pd.DataFrame:
    """A data file in the benchmark format as a DataFrame, one row per post.

    Columns: ``id`` (the image id, or the post's number when the file has no ``IMGID``
    lines), ``image_id`` (None without one), ``tokens`` and ``tags`` (lists), ``entities``
    (a list of ``{"text", "type", "start", "end"}`` per post, token ends exclusive, counted
    as seqeval counts them) and ``line`` (where the post starts in the file).
    """
    pd = _pandas()
    from smner.data.conll import read_conll as read_corpus

    corpus = read_corpus(path, label_aliases)
    rows = [
        {
            "id": ex.post_id,
            "image_id": ex.image_id,
            "tokens": list(ex.tokens),
            "tags": list(ex.tags or []),
            "entities": [
                {
                    "text": " ".join(ex.tokens[e.start : e.end]),
                    "type": e.type,
                    "start": e.start,
                    "end": e.end,
                }
                for e in ex.entities
            ],
            "line": ex.line,
        }
        for ex in corpus
    ]
    return pd.DataFrame(rows, columns=list(CONLL_COLUMNS))


def write_conll(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a frame of posts (as :func:`read_conll` gives, filtered or edited) as a data file.

    Needs a ``tokens`` column, and ``tags`` or ``entities`` (tags win when both are there;
    with neither, every tag is ``O``); ``image_id`` writes the ``IMGID:`` lines.
    """
    _pandas()
    from smner.data.conll import format_conll
    from smner.data.spans import entities_to_bio
    from smner.data.types import Entity, Example
    from smner.fileio import atomic_write_text

    _column(frame, "tokens", "the tokens")
    examples = []
    for position, (index, row) in enumerate(frame.iterrows()):
        tokens = [str(t) for t in row["tokens"]]
        if "tags" in frame.columns and not _missing_list(row["tags"]):
            tags = [str(t) for t in row["tags"]]
        elif "entities" in frame.columns and not _missing_list(row["entities"]):
            spans = [
                Entity(int(e["start"]), int(e["end"]), str(e["type"])) for e in row["entities"]
            ]
            tags = entities_to_bio(spans, len(tokens))
        else:
            tags = ["O"] * len(tokens)
        if len(tags) != len(tokens):
            raise SmnerError(f"row {index!r}: {len(tags)} tags for {len(tokens)} tokens")
        if not tokens:
            raise SmnerError(f"row {index!r}: the post has no tokens")
        image_id = row["image_id"] if "image_id" in frame.columns else None
        image_id = None if _missing(image_id) else str(image_id)
        examples.append(Example(tokens, tags, image_id, post_id=str(position)))
    atomic_write_text(path, format_conll(examples))


def _missing_list(value: Any) -> bool:
    return not hasattr(value, "__len__") and _missing(value)
