"""smner as a spaCy pipeline component (``pip install 'smner[spacy]'``).

>>> import spacy
>>> nlp = spacy.blank("en")                       # or a trained one: spacy.load("en_core_web_sm")
>>> nlp.add_pipe("smner", config={"model": "runs/t17/best"})
>>> doc = nlp.make_doc("Kevin Durant joins the Warriors")
>>> doc._.images = ["kd.jpg"]                     # optional: paths, bytes or PIL images
>>> doc = nlp(doc)
>>> [(ent.text, ent.label_, ent._.smner_score, ent._.image_box) for ent in doc.ents]

The factory is registered under the name ``smner`` through the ``spacy_factories`` entry point,
so ``add_pipe("smner")`` finds it without importing this module. The component

- reads the doc's text (``doc.text``: smner splits it with its own tweet-aware tokenizer, as the
  model was trained) and its images from ``doc._.images``;
- predicts through :class:`~smner.predict.predictor.Predictor` (``nlp.pipe`` sends the docs in
  batches of the component's ``batch_size``);
- sets ``doc.ents``, aligning smner's character offsets to spaCy's tokens
  (:func:`set_entities`), and the extensions ``span._.smner_score``, ``span._.image_box``,
  ``span._.image_index`` and ``doc._.smner_image_status``.

Only the model's name (the folder or Hub id as given) is stored by ``nlp.to_disk``, in the
pipeline's ``config.cfg``; ``spacy.load`` loads the model from it again.

Importing ``smner`` does not import this module, and this module imports spaCy; without spaCy
it raises :class:`~smner.errors.MissingExtra` naming ``smner[spacy]``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from smner.data.posts import ImageLike, InvalidPost, PostInput, as_post
from smner.data.predictions import FailedPost, Mention, PostPrediction
from smner.extras import import_extra

spacy = import_extra("spacy", "spacy", "smner's spaCy component")

from spacy.language import Language  # noqa: E402
from spacy.pipeline import Pipe  # noqa: E402
from spacy.tokens import Doc, Span  # noqa: E402
from spacy.util import minibatch  # noqa: E402

if TYPE_CHECKING:
    from smner.predict.predictor import Predictor

__all__ = [
    "IMAGES_PER_POST",
    "SmnerComponent",
    "SmnerSpacyWarning",
    "doc_images",
    "doc_post",
    "image_index",
    "make_smner",
    "register_extensions",
    "set_annotations",
    "set_entities",
]

#: How many of a doc's images :func:`doc_post` takes by default; the component takes as many as
#: its model does (``model.max_images``), and a doc with more is predicted with the first of
#: them (the component warns once).
IMAGES_PER_POST = 1

#: How a prediction's character span becomes a span of spaCy tokens when its ends fall inside
#: a token: "expand" takes the tokens it touches, "contract" only those it covers whole,
#: "strict" none (the entity is then skipped with a warning).
ALIGNMENT_MODES = ("expand", "contract", "strict")


class SmnerSpacyWarning(UserWarning):
    """An entity that could not be placed on the doc's tokens, a doc that could not be
    predicted, or images the model does not take."""


def register_extensions() -> None:
    """Add the attributes the component reads and fills (None until it has run, and on
    entities other components found): ``doc._.images``, ``doc._.smner_image_status``,
    ``span._.smner_score``, ``span._.image_box`` and ``span._.image_index``.

    Done when the component is made (and by the functions below), not when this module is
    imported: spaCy imports every ``spacy_factories`` entry point whenever it makes a
    pipeline, and pipelines without smner should not get these attributes."""
    for name in ("smner_score", "image_box", "image_index"):
        if not Span.has_extension(name):
            Span.set_extension(name, default=None)
    for name in ("images", "smner_image_status"):
        if not Doc.has_extension(name):
            Doc.set_extension(name, default=None)


# --- a doc as a post -------------------------------------------------------------------------


def doc_images(doc: Doc) -> list[ImageLike]:
    """``doc._.images`` as a list: None or ``[]`` is no image; one path, bytes or PIL image
    alone is a list of one."""
    register_extensions()
    images = doc._.images
    if images is None:
        return []
    if isinstance(images, list | tuple):
        return list(images)
    return [images]


def doc_post(doc: Doc, images_per_post: int = IMAGES_PER_POST) -> PostInput:
    """The post the Predictor reads for ``doc``: its text and the first ``images_per_post``
    of its images (the one place a doc becomes a post, so a Predictor that takes several
    images gets them here).

    A value in ``doc._.images`` that is not a path, bytes or a PIL image is a TypeError."""
    images = doc_images(doc)[:images_per_post]
    record: dict[str, Any] = {"text": doc.text}
    if len(images) > 1:
        record["images"] = images
    elif images:
        record["image"] = images[0]
    try:
        return as_post(record)
    except InvalidPost as exc:
        raise TypeError(
            f"doc._.images must be a path, bytes, a PIL image, or a list of them: {exc}"
        ) from None


# --- a prediction on a doc -------------------------------------------------------------------


def _check_alignment_mode(alignment_mode: str) -> None:
    if alignment_mode not in ALIGNMENT_MODES:
        raise ValueError(f"alignment_mode must be one of {ALIGNMENT_MODES}, got {alignment_mode!r}")


def _align(doc: Doc, mention: Mention, alignment_mode: str) -> Span | str:
    """The doc's span of ``mention`` (labelled with its type), or why it has none."""
    start, end = mention.char_start, mention.char_end
    if not 0 <= start < end <= len(doc.text) or doc.text[start:end] != mention.text:
        return (
            f"its offsets do not hold its text in this doc (they hold {doc.text[start:end]!r}; "
            "a prediction of another text?)"
        )
    span = doc.char_span(start, end, label=mention.type, alignment_mode="strict")
    if span is None and alignment_mode != "strict":
        span = doc.char_span(start, end, label=mention.type, alignment_mode=alignment_mode)
    if span is None or not len(span):
        return (
            f"it does not align to the doc's tokens (alignment_mode {alignment_mode!r}; "
            f"{_where(doc, start, end)})"
        )
    return span


def _where(doc: Doc, start: int, end: int) -> str:
    tokens = [t.text for t in doc if t.idx < end + 20 and t.idx + len(t) > start - 20]
    return f"spaCy's tokens there: {tokens}"


def image_index(mention: Mention) -> int | None:
    """The position in ``doc._.images`` of the image the entity is placed in: the Mention's own
    ``image_index`` where it has one, else 0 when it has a box (one image per post)."""
    index = getattr(mention, "image_index", None)
    if index is not None:
        return int(index)
    return 0 if mention.box is not None else None


def set_entities(
    doc: Doc,
    mentions: Sequence[Mention],
    alignment_mode: str = "expand",
    overwrite_ents: bool = True,
) -> list[Span]:
    """Put smner's ``mentions`` of ``doc.text`` on ``doc.ents``; the spans placed, in order.

    Each mention's ``char_start``/``char_end`` become the tokens that cover exactly those
    characters; where an end falls inside a spaCy token, ``alignment_mode`` ("expand",
    "contract" or "strict", see :data:`ALIGNMENT_MODES`) decides. A mention that then has no
    tokens, whose offsets do not hold its text in this doc, or that lands on tokens already
    taken by an earlier mention, is skipped with a :class:`SmnerSpacyWarning`, never an
    exception.

    Entities already in ``doc.ents`` that overlap none of smner's stay. Where they overlap,
    ``overwrite_ents=True`` keeps smner's and drops the others; ``False`` keeps the existing
    ones and drops smner's (silently: that is what was asked for).

    Each placed span gets ``span._.smner_score``, ``span._.image_box`` ([x0, y0, x1, y1] in the
    image's pixels, or None) and ``span._.image_index`` (which of ``doc._.images`` the box is
    in, or None without a box).
    """
    _check_alignment_mode(alignment_mode)
    register_extensions()
    placed: list[Span] = []
    for mention in sorted(mentions, key=lambda m: (m.char_start, m.char_end)):
        span = _align(doc, mention, alignment_mode)
        if isinstance(span, str):
            warnings.warn(
                f"smner: the {mention.type} entity {mention.text!r} at characters "
                f"{mention.char_start}-{mention.char_end} is left out of doc.ents: {span}",
                SmnerSpacyWarning,
                stacklevel=2,
            )
            continue
        if placed and span.start < placed[-1].end:
            warnings.warn(
                f"smner: the {mention.type} entity {mention.text!r} at characters "
                f"{mention.char_start}-{mention.char_end} is left out of doc.ents: once "
                f"aligned it shares spaCy tokens with {placed[-1].text!r} "
                f"({_where(doc, span.start_char, span.end_char)})",
                SmnerSpacyWarning,
                stacklevel=2,
            )
            continue
        span._.smner_score = float(mention.score)
        span._.image_box = None if mention.box is None else [float(v) for v in mention.box]
        span._.image_index = image_index(mention)
        placed.append(span)

    def overlaps(span: Span, others: Iterable[Span]) -> bool:
        return any(span.start < other.end and other.start < span.end for other in others)

    existing = list(doc.ents)
    if overwrite_ents:
        ents = [e for e in existing if not overlaps(e, placed)] + placed
    else:
        placed = [s for s in placed if not overlaps(s, existing)]
        ents = existing + placed
    doc.ents = sorted(ents, key=lambda s: s.start)
    return placed


def set_annotations(
    doc: Doc,
    prediction: PostPrediction,
    alignment_mode: str = "expand",
    overwrite_ents: bool = True,
) -> list[Span]:
    """A :class:`PostPrediction` of ``doc.text`` on ``doc``: ``doc._.smner_image_status`` (the
    prediction's ``image_status`` as a string: "ok", "no image", "missing", ...) and its
    entities (:func:`set_entities`)."""
    register_extensions()
    doc._.smner_image_status = str(prediction.image_status)
    return set_entities(doc, prediction.entities, alignment_mode, overwrite_ents)


# --- the component ---------------------------------------------------------------------------


class SmnerComponent(Pipe):
    """The ``smner`` pipeline component: a :class:`~smner.predict.predictor.Predictor` on docs.

    Attributes:
        model_name: the model folder or Hub id, as given (what ``nlp.to_disk`` stores).
        predictor: the loaded Predictor.
        batch_size: posts per forward pass in ``nlp.pipe``.
        alignment_mode, overwrite_ents: see :func:`set_entities`.
    """

    def __init__(
        self,
        nlp: Language,
        name: str,
        predictor: Predictor,
        model: str,
        batch_size: int = 32,
        alignment_mode: str = "expand",
        overwrite_ents: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        _check_alignment_mode(alignment_mode)
        register_extensions()
        self.name = name
        self.model_name = model
        self.predictor = predictor
        self.batch_size = batch_size
        self.alignment_mode = alignment_mode
        self.overwrite_ents = overwrite_ents
        #: how many of a doc's images the model takes (one on the ONNX backend, for now; a
        #: text-only model reads none, so any number passes)
        self.images_per_post = predictor.image_limit()[0] or 1
        self._warned_images = False

    @property
    def labels(self) -> tuple[str, ...]:
        """The entity types the model predicts."""
        return tuple(self.predictor.processor.config.labels)

    def __call__(self, doc: Doc) -> Doc:
        self._annotate([doc])
        return doc

    def pipe(self, stream: Iterable[Doc], *, batch_size: int = 128) -> Iterator[Doc]:
        """The docs of ``stream``, annotated: read ``batch_size`` at a time (spaCy's
        ``nlp.pipe(batch_size=...)``), each read predicted in batches of the component's own
        ``batch_size``. A failure goes to the component's error handler, as in spaCy's own
        components."""
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size):
            try:
                self._annotate(docs)
            except Exception as exc:
                error_handler(self.name, self, docs, exc)
                continue
            yield from docs

    def _annotate(self, docs: Sequence[Doc]) -> None:
        todo: list[tuple[Doc, PostInput]] = []
        for doc in docs:
            doc._.smner_image_status = None
            if not doc.text.strip():
                continue  # nothing to predict: the doc keeps its entities
            self._check_images(doc)
            todo.append((doc, doc_post(doc, self.images_per_post)))
        if not todo:
            return
        results = self.predictor.predict_stream(
            [post for _, post in todo],
            batch_size=self.batch_size,
            window=len(todo),
            errors="record",
        )
        for (doc, _), result in zip(todo, results, strict=True):
            if isinstance(result, FailedPost):
                reason = re.sub(r"^post \d+: ", "", result.error)
                warnings.warn(
                    f"smner could not predict a doc ({reason}); it keeps the entities it had",
                    SmnerSpacyWarning,
                    stacklevel=3,
                )
                continue
            set_annotations(doc, result, self.alignment_mode, self.overwrite_ents)

    def _check_images(self, doc: Doc) -> None:
        count = len(doc_images(doc))
        most = self.images_per_post
        if count > most and not self._warned_images:
            self._warned_images = True
            used = "the first is used" if most == 1 else f"the first {most} are used"
            warnings.warn(
                f"smner: a doc has {count} images; the model takes {most} per post, "
                f"so {used} (this warning is shown once)",
                SmnerSpacyWarning,
                stacklevel=4,
            )

    def score(self, examples: Iterable[Any], **kwargs: Any) -> dict[str, Any]:
        """Entity precision, recall and F1 (spaCy's ``ents_p``/``ents_r``/``ents_f`` and
        ``ents_per_type``), for ``nlp.evaluate``."""
        from spacy.scorer import get_ner_prf

        return get_ner_prf(examples)


@Language.factory(
    "smner",
    default_config={
        "batch_size": 32,
        "device": "cpu",
        "backend": None,
        "alignment_mode": "expand",
        "overwrite_ents": True,
    },
    assigns=[
        "doc.ents",
        "token.ent_iob",
        "token.ent_type",
        "span._.smner_score",
        "span._.image_box",
        "span._.image_index",
        "doc._.smner_image_status",
    ],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_smner(
    nlp: Language,
    name: str,
    model: str,
    batch_size: int,
    device: str,
    backend: str | None,
    alignment_mode: str,
    overwrite_ents: bool,
) -> SmnerComponent:
    """The factory ``nlp.add_pipe("smner", config={"model": ...})`` calls: loads ``model`` (a
    saved model folder, an exported ONNX folder or a Hub id) on ``device``; ``backend``
    "pytorch" runs an exported folder's PyTorch weights."""
    from smner.predict.predictor import Predictor

    _check_alignment_mode(alignment_mode)  # before the model is loaded
    predictor = Predictor.from_pretrained(str(model), device=device, backend=backend)
    return SmnerComponent(
        nlp,
        name,
        predictor,
        model=str(model),
        batch_size=batch_size,
        alignment_mode=alignment_mode,
        overwrite_ents=overwrite_ents,
    )
