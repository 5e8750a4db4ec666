"""How a post becomes a model's input, in one object saved beside the model's weights.

A :class:`Processor` holds everything between a post and a
:class:`~smner.processing.batching.Batch`:
the tweet-aware split into words (and its token limit), the word pieces of the model's
tokenizer, span enumeration (or BIO tags) over the model's labels, and the image preprocessing
(resize, crop, normalise). Training, evaluation, the :class:`~smner.predict.predictor.Predictor`,
the
command line and the server all prepare posts through it, so a post is read the same way
everywhere. It is written into the model folder (``processor.json`` and ``tokenizer/``) and
read back by :meth:`Processor.from_pretrained`; folders saved before ``processor.json``
existed get the same processor from their ``config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from smner.config.model import ModelConfig
from smner.data.images import (
    DEFAULT_LIMITS,
    ImageLimits,
    ImageStatus,
    load_image_bytes,
    load_image_file,
)
from smner.data.posts import DEFAULT_MAX_TOKENS, ImageLike, PostInput, post_words
from smner.data.spans import batch_spans, bio_tags, no_spans
from smner.data.tweet_tokenizer import Token
from smner.data.types import Entity
from smner.encoders.preprocessing import ImagePreprocessing
from smner.encoders.text import WordTokenizer, load_tokenizer
from smner.errors import SmnerError
from smner.fileio import atomic_write_text, read_input_bytes
from smner.processing.batching import Batch, BoxCoords, PostImages, make_batch
from smner.saved.folder import PROCESSOR_FILE, TOKENIZER_DIR, load_config

#: Bumped when ``processor.json`` changes incompatibly.
PROCESSOR_FORMAT = 1
#: Sub-words a post may have at most, whatever the encoder's position table allows.
MAX_SUBWORDS = 512


@dataclass(frozen=True)
class ProcessorConfig:
    """What ``processor.json`` holds: every setting that turns a post into model input."""

    labels: tuple[str, ...]
    #: ``spans`` (span classification) or ``bio`` (a tag per word)
    scheme: Literal["spans", "bio"] = "spans"
    max_span_width: int = 8
    max_subwords_per_word: int = 10
    #: sub-words per post, special tokens included
    max_subwords: int = MAX_SUBWORDS
    #: words per post; longer posts are refused
    max_tokens: int = DEFAULT_MAX_TOKENS
    #: :class:`ImagePreprocessing` settings, or None for a text-only model
    image: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.scheme not in ("spans", "bio"):
            raise SmnerError(f"processor scheme must be 'spans' or 'bio', got {self.scheme!r}")
        if not self.labels or not all(isinstance(x, str) and x for x in self.labels):
            raise SmnerError("processor labels must be a non-empty list of names")
        for name in ("max_span_width", "max_subwords_per_word", "max_subwords", "max_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SmnerError(f"processor {name} must be a positive integer, got {value!r}")

    @classmethod
    def for_model(
        cls, config: ModelConfig, max_tokens: int = DEFAULT_MAX_TOKENS
    ) -> ProcessorConfig:
        """The settings a model of ``config`` was trained with."""
        positions = int((config.text_encoder_config or {}).get("max_position_embeddings", 514))
        return cls(
            labels=tuple(config.labels),
            scheme=config.label_scheme,
            max_span_width=config.max_span_width,
            max_subwords_per_word=config.max_subwords_per_word,
            # RoBERTa-style models offset positions by the padding index; 2 spare cover it.
            max_subwords=min(MAX_SUBWORDS, positions - 2),
            max_tokens=max_tokens,
            image=config.image_preprocessing if config.use_image else None,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return {"format_version": PROCESSOR_FORMAT, **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProcessorConfig:
        values = dict(data)
        version = values.pop("format_version", None)
        if not isinstance(version, int) or version > PROCESSOR_FORMAT:
            raise SmnerError(
                f"processor format {version!r}: this smner reads format {PROCESSOR_FORMAT} "
                "and older"
            )
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise SmnerError(f"unknown processor settings: {', '.join(unknown)}")
        if isinstance(values.get("labels"), list):
            values["labels"] = tuple(values["labels"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise SmnerError(f"processor settings: {exc}") from None


@dataclass
class PreparedPost:
    """A post after the CPU stage (:meth:`Processor.prepare`), ready for the model's forward.

    Fields:
        words: the post's words, as the model reads them.
        spans: each word's character span in the post's text (None for corpus examples, which
            have no text to map back to).
        image_status: what happened to the post's image.
        picture: the decoded picture, which the forward stage encodes on the device and
            postprocess maps boxes back into; None without a usable image.
        image: model input prepared earlier instead of a picture (cached backbone features, or
            pixels for a trainable backbone), as evaluation and training provide it.
        post: the post it came from (None for corpus examples).
        pictures: for a post given a list of images, each one's picture (None where it
            cannot be used), in order; ``picture`` is then None.
        image_statuses: for such a post, what happened to each image; ``image_status`` is
            then ``ok`` when any image is used, ``no image`` for an empty list, else the first
            image's status.
    """

    words: list[str]
    spans: list[Token] | None
    image_status: ImageStatus
    picture: Image.Image | None = None
    #: (a list, one per image slot, for a corpus post of several images)
    image: PostImages = None
    post: PostInput | None = None
    pictures: list[Image.Image | None] | None = None
    image_statuses: list[ImageStatus] | None = None


class Processor:
    """Posts in, batches out, for one model: :meth:`prepare` for one post,
    ``processor(words, entities, images, ...)`` -> :class:`Batch` for a batch of them (with
    its labels, span width and word pieces), and the rest of what prepares a post.

    Attributes:
        tokenizer: the model's Hugging Face tokenizer.
        config: the :class:`ProcessorConfig`.
        image: the image preprocessing, or None for a text-only model.
    """

    def __init__(self, tokenizer: Any, config: ProcessorConfig) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.image = ImagePreprocessing.from_dict(config.image) if config.image else None
        self.word_pieces = WordTokenizer(
            tokenizer, config.max_subwords_per_word, config.max_subwords
        )
        self.label_to_id = {label: i for i, label in enumerate(("O", *config.labels))}
        self.max_span_width = config.max_span_width
        self.bio_label_to_id: dict[str, int] | None = None
        #: the span suggester, chosen by the labelling scheme: a model that tags words (BIO)
        #: gets no candidate spans, a span model every span up to ``max_span_width`` words
        self.suggest_spans = batch_spans
        if config.scheme == "bio":
            self.bio_label_to_id = {tag: i for i, tag in enumerate(bio_tags(config.labels))}
            self.suggest_spans = no_spans

    def __call__(
        self,
        tokens: Sequence[Sequence[str]],
        entities: Sequence[Sequence[Entity]] | None = None,
        images: Sequence[PostImages] | None = None,
        attention_targets: Sequence[Mapping[Entity, np.ndarray] | None] | None = None,
        box_targets: Sequence[Mapping[Entity, Sequence[BoxCoords]] | None] | None = None,
    ) -> Batch:
        """The batch of posts' words, with gold labels, images and box targets when given."""
        return make_batch(
            self.word_pieces,
            self.suggest_spans,
            self.max_span_width,
            self.label_to_id,
            self.bio_label_to_id,
            tokens,
            entities,
            images,
            attention_targets,
            box_targets,
        )

    @classmethod
    def for_model(
        cls, config: ModelConfig, tokenizer: Any, max_tokens: int = DEFAULT_MAX_TOKENS
    ) -> Processor:
        """The processor of a model of ``config`` whose text encoder uses ``tokenizer``."""
        return cls(tokenizer, ProcessorConfig.for_model(config, max_tokens))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Processor:
        """The processor saved in a model folder (from its ``config.json`` when the folder
        predates ``processor.json``)."""
        directory = Path(directory)
        tokenizer = load_tokenizer(directory / TOKENIZER_DIR)
        path = directory / PROCESSOR_FILE
        if not path.exists():
            return cls.for_model(load_config(directory), tokenizer)
        data = read_input_bytes(path, 2**20, "processor settings")
        try:
            payload = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SmnerError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(payload, dict):
            raise SmnerError(f"{path}: expected an object of processor settings")
        try:
            return cls(tokenizer, ProcessorConfig.from_dict(payload))
        except SmnerError as exc:
            raise SmnerError(f"{path}: {exc}") from None

    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``processor.json`` and ``tokenizer/`` into ``directory`` (a model folder
        being staged: :meth:`NERModel.save_pretrained` makes the whole folder atomic)."""
        directory = Path(directory)
        self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        atomic_write_text(directory / PROCESSOR_FILE, text)

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def check_model(self, config: ModelConfig, where: str | Path) -> None:
        """Refuse a processor that prepares posts for another model than ``config``'s."""
        expected = ProcessorConfig.for_model(config, self.config.max_tokens)
        if expected != self.config:
            wrong = [
                f.name
                for f in fields(ProcessorConfig)
                if getattr(expected, f.name) != getattr(self.config, f.name)
            ]
            raise SmnerError(
                f"{where}: {PROCESSOR_FILE} does not match the model's config.json "
                f"({', '.join(wrong)} differ); the folder's files do not belong together"
            )

    # --- posts -------------------------------------------------------------------------------

    @property
    def max_tokens(self) -> int:
        return self.config.max_tokens

    def subword_length(self, words: Sequence[str]) -> int:
        """Sub-words the text encoder sees for ``words`` (special tokens included)."""
        return self.word_pieces.length(words)

    def words(self, post: PostInput) -> tuple[list[str], list[Token]]:
        """The post's words and their character spans, or SmnerError if the model cannot take
        it (no tokens, too many, text not valid in UTF-8)."""
        return post_words(post, self.config.max_tokens)

    def prepare(self, post: PostInput, limits: ImageLimits = DEFAULT_LIMITS) -> PreparedPost:
        """The CPU stage of a prediction: the post split into words (once: the split is kept
        on the post) and its image looked up, checked against ``limits`` and decoded. A
        text-only model does not open the image at all."""
        words, spans = self.words(post)
        images = post.image_list()
        if images is None:
            picture, status = self.load_image(post.image, limits)
            return PreparedPost(words, spans, status, picture, post=post)
        loaded = [self.load_image(image, limits) for image in images]
        statuses = [status for _, status in loaded]
        return PreparedPost(
            words,
            spans,
            summary_status(statuses),
            post=post,
            pictures=[picture for picture, _ in loaded],
            image_statuses=statuses,
        )

    def load_image(
        self, image: ImageLike, limits: ImageLimits = DEFAULT_LIMITS
    ) -> tuple[Image.Image | None, ImageStatus]:
        """A post's image as an RGB picture, or None and why not (never raises for bad image
        data: a post whose image cannot be used is predicted from its text)."""
        if image is None:
            return None, ImageStatus.NO_IMAGE
        if self.image is None:
            return None, ImageStatus.IGNORED
        if isinstance(image, Image.Image):
            return image.convert("RGB"), ImageStatus.OK
        if isinstance(image, bytes):
            return load_image_bytes(image, limits)
        return load_image_file(Path(image), limits)

    def pixels(self, pictures: Sequence[Image.Image]) -> torch.Tensor:
        """Pictures as the ``[N, 3, H, W]`` tensor the image encoder takes."""
        if self.image is None:
            raise SmnerError("this model is text-only: it takes no images")
        return self.image(pictures)

    def crop_box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The part of a ``width`` x ``height`` picture the model sees, in its pixels."""
        if self.image is None:
            raise SmnerError("this model is text-only: it takes no images")
        return self.image.crop_box(width, height)


def summary_status(statuses: Sequence[ImageStatus]) -> ImageStatus:
    """One status for a post of several images: ``ok`` when any is used, ``no image`` for
    none, else the first image's (why it was not used)."""
    if not statuses:
        return ImageStatus.NO_IMAGE
    if ImageStatus.OK in statuses:
        return ImageStatus.OK
    return statuses[0]
