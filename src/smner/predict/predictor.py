"""Prediction from Python: text (+ image) in, typed entities (+ where the model looked) out.

>>> from smner import Predictor
>>> predictor = Predictor.from_pretrained("runs/t17/best")
>>> predictor.predict("George visited Paris", image="photo.jpg").entities
>>> predictor.predict_many(["George visited Paris", ["loves", "New", "York"],
...                         {"id": "7", "text": "RT @george: Apple store", "image": "7.jpg"}])
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from PIL import Image

from smner.data.boxes import Box, box_to_pixels
from smner.data.images import ImageLimits
from smner.data.posts import ImageLike, PostInput, as_post, with_image
from smner.data.predictions import ErrorPolicy, FailedPost, Mention, PostPrediction
from smner.data.tweet_tokenizer import Token
from smner.errors import SmnerError
from smner.model.base import NERModel, PredictedEntity
from smner.model.quantize import Quantization, quantize_model
from smner.model.span_pruning import set_span_pruning
from smner.predict.loop import forward, resolve_device
from smner.predict.onnx_backend import OnnxModel, load_model
from smner.predict.streaming import DEFAULT_WINDOW, predict_stream
from smner.processing.processor import PreparedPost, Processor

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["FailedPost", "ImageLike", "Mention", "PostInput", "PostPrediction", "Predictor"]


class Predictor:
    """A saved model, ready to predict on posts.

    Attributes:
        model: the :class:`~smner.model.NERModel`, in eval mode, on ``device``.
        device: the torch device predictions run on.
        processor: the model's :class:`~smner.processing.processor.Processor`: how a post's text and
            image become model input (saved with the model).
        limits: the byte and pixel limits every image is checked against before decoding.
        max_tokens: the most tokens a post may have; longer posts are refused.

    Posts may be given as a string (raw text), a list of strings (tokens), a mapping with the
    keys of a JSONL record (``text`` or ``tokens``, optionally ``image`` and ``id``) or a
    :class:`PostInput`, mixed in one call.
    """

    def __init__(
        self,
        model: NERModel,
        processor: Processor | Any,
        device: str = "cpu",
        limits: ImageLimits | None = None,
        max_tokens: int | None = None,
        quantize: Quantization | None = None,
        span_pruning: int | None = None,
    ) -> None:
        """``processor`` is the model's :class:`Processor` (or its Hugging Face tokenizer, from
        which the processor of the model's config is made); ``max_tokens`` overrides its
        token limit; ``quantize="int8"`` runs the linear layers in int8 on the CPU, ``"bf16"``
        the forward under bfloat16 autocast (faster; see :mod:`smner.model.quantize`);
        ``span_pruning=N`` sends only each post's N spans the text finds likeliest through the
        span-to-region attention (faster; see :mod:`smner.model.span_pruning`), overriding
        the folder's ``model.span_pruning``."""
        self.device = resolve_device(device)
        if quantize is not None and isinstance(model, OnnxModel):
            raise SmnerError(
                f"quantize {quantize}: {model.directory} runs on ONNX Runtime; PyTorch's "
                "quantization applies to PyTorch folders (export with --quantize int8 instead)"
            )
        if span_pruning is not None:
            set_span_pruning(model, span_pruning)
        self.model = model.to(self.device).eval()
        #: "int8" when the linear layers run quantized (such a predictor is not saved), "bf16"
        #: when its forward runs under bfloat16 autocast
        self.quantized = quantize
        if quantize is not None:
            quantize_model(self.model, quantize, self.device)
        if not isinstance(processor, Processor):
            processor = Processor.for_model(model.config, processor)
        if max_tokens is not None and max_tokens != processor.max_tokens:
            processor = Processor(
                processor.tokenizer, replace(processor.config, max_tokens=max_tokens)
            )
        processor.check_model(model.config, "Predictor")
        self.processor = processor
        self.limits = limits or ImageLimits()

    @property
    def max_tokens(self) -> int:
        return self.processor.max_tokens

    @property
    def backend(self) -> str:
        """``"onnx"`` for a folder written by ``smner export`` (ONNX Runtime runs the text
        encoder and heads), else ``"pytorch"``."""
        return "onnx" if isinstance(self.model, OnnxModel) else "pytorch"

    @property
    def quantization(self) -> str | None:
        """What the predictor runs quantized: ``"int8"``/``"bf16"`` asked of PyTorch, or an
        exported folder's own int8; None for float32."""
        if isinstance(self.model, OnnxModel):
            return self.model.quantization
        return self.quantized

    def image_limit(self) -> tuple[int | None, str]:
        """The most images a post may bring, and what sets it: None for a text-only model
        (it ignores images), 1 on the ONNX backend, else the model's ``max_images``."""
        if self.model.image_encoder is None:
            return None, "a text-only model ignores images"
        if self.backend == "onnx":
            return 1, "the ONNX backend takes one image a post for now"
        return int(getattr(self.model.config, "max_images", 1)), "model.max_images"

    @property
    def collator(self) -> Processor:
        """Deprecated: the processor, by the name earlier versions gave it."""
        warnings.warn(
            "Predictor.collator is deprecated; use Predictor.processor",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.processor

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        device: str = "cpu",
        *,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool | None = None,
        backend: str | None = None,
        **kwargs: Any,
    ) -> Predictor:
        """Load a saved model folder, or a Hugging Face Hub repo id (``org/name``, optionally
        ``org/name@revision``) through ``huggingface_hub`` (``pip install 'smner[hub]'``)
        when ``name_or_path`` is not a local folder.

        The backend comes from the folder: one written by ``smner export`` runs on ONNX
        Runtime (``pip install 'smner[onnx]'``), any other on PyTorch; ``backend="pytorch"``
        runs an exported folder's PyTorch weights instead."""
        from smner.saved.hub import resolve_model_dir

        directory = resolve_model_dir(
            name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
        )
        model = load_model(directory, backend)
        return cls(model, Processor.from_pretrained(directory), device=device, **kwargs)

    def save_pretrained(self, directory: str | Path) -> None:
        """Write the model and its processor as a model folder (atomically), loadable by
        :meth:`from_pretrained`."""
        if self.quantized == "int8":
            raise SmnerError(
                f"{directory}: a {self.quantized} predictor is not saved (its weights are "
                "packed for the CPU kernels); save the float model and load it with quantize"
            )
        self.model.save_pretrained(directory, processor=self.processor)

    def predict(
        self, post: Any, image: ImageLike = None, images: list[ImageLike] | None = None
    ) -> PostPrediction:
        """Entities of one post, in any accepted form; ``image`` adds or replaces its image,
        ``images`` gives it several (up to the model's ``max_images``)."""
        return self.predict_many([with_image(post, image, images)])[0]

    def __call__(
        self, posts: Any, image: ImageLike = None
    ) -> PostPrediction | list[PostPrediction]:
        """``predictor(post)`` for one post (a string, a mapping or a PostInput) is
        :meth:`predict`; ``predictor([post, ...])`` is :meth:`predict_many`, so a list of
        strings is a list of raw-text posts there, as in :meth:`predict_many`."""
        if isinstance(posts, str | PostInput | Mapping):
            return self.predict(posts, image)
        if image is not None:
            raise TypeError("image= goes with one post; give each post of a list its own image")
        return self.predict_many(posts)

    def predict_many(self, posts: Iterable[Any], batch_size: int = 32) -> list[PostPrediction]:
        """Predictions in the order of ``posts`` (any iterable), each in any accepted form.

        Every post is checked before any is predicted: a post of an unknown form is a
        :class:`TypeError` naming its position. Batches group posts of similar length, so
        short posts do not pay for the padding of long ones. For more posts than fit in
        memory, use :meth:`predict_stream`.
        """
        if isinstance(posts, str | PostInput | Mapping):
            raise TypeError(
                f"predict_many takes a list of posts, got one {type(posts).__name__}; "
                "for one post use predict"
            )
        converted = [as_post(post, i) for i, post in enumerate(posts)]
        window = max(1, len(converted))  # all at once: they are in memory already
        return cast(list[PostPrediction], list(self.predict_stream(converted, batch_size, window)))

    def predict_stream(
        self,
        posts: Iterable[Any],
        batch_size: int = 32,
        window: int = DEFAULT_WINDOW,
        errors: ErrorPolicy = "raise",
    ) -> Iterator[PostPrediction | FailedPost]:
        """Predictions for ``posts`` (any iterable, even an endless one), yielded in its order.

        Posts are read ``window`` at a time and sorted by length inside the window, so memory
        stays bounded whatever the input. With ``errors="raise"`` a post the model cannot take
        raises (once the posts before its window have been yielded); with ``"record"`` it is
        yielded as a :class:`~smner.predict.streaming.FailedPost` with an ``error`` in its place.
        """
        if isinstance(posts, str | PostInput | Mapping):
            raise TypeError(
                f"predict_stream takes an iterable of posts, got one {type(posts).__name__}"
            )
        return predict_stream(posts, self._predict_batch, self.tokenize, batch_size, window, errors)

    def predict_dataframe(
        self,
        frame: pd.DataFrame,
        text: str = "text",
        image: str | None = None,
        tokens: str | None = None,
        explode: bool = False,
        batch_size: int = 32,
    ) -> pd.DataFrame:
        """``frame`` with an ``entities`` column (lists of dicts, as in the JSONL); see
        :func:`smner.data.frames.predict_dataframe` (needs ``pip install 'smner[pandas]'``)."""
        from smner.data.frames import predict_dataframe

        return predict_dataframe(self, frame, text, image, tokens, explode, batch_size)

    # --- internals -------------------------------------------------------------------------

    def tokenize(self, post: PostInput) -> tuple[list[str], list[Token]]:
        """The post's words and their character spans, or SmnerError if the model cannot take it.

        Callers with many posts check each first, so that one bad post stops the run before
        any prediction is made.
        """
        found = self.processor.words(post)
        images = post.image_list()
        most, why = self.image_limit()
        if images is not None and most is not None and len(images) > most:
            raise SmnerError(
                f"the post has {len(images)} images; this model takes at most {most} ({why})"
            )
        return found

    def _predict_batch(self, posts: Sequence[PostInput]) -> list[PostPrediction]:
        """prepare (CPU) -> forward (the device) -> postprocess (CPU), for one batch."""
        prepared = [self.processor.prepare(post, self.limits) for post in posts]
        predicted = forward(self.model, self.processor, prepared, self.device)
        return [self.postprocess(p, found) for p, found in zip(prepared, predicted, strict=True)]

    def postprocess(
        self, prepared: PreparedPost, predicted: list[PredictedEntity]
    ) -> PostPrediction:
        """A post's decoded entities as a :class:`PostPrediction`: character offsets, the
        attention as grids, boxes mapped through the crop back into the picture's pixels."""
        post = prepared.post
        assert post is not None and prepared.spans is not None
        if prepared.pictures is None:
            frame = self._frame(prepared.picture)
            mentions = [
                self._mention(p, prepared.words, prepared.spans, text=post.text, frame=frame)
                for p in predicted
            ]
        else:  # a post given a list of images: each entity over the image it looked at
            frames = [self._frame(picture) for picture in prepared.pictures]
            mentions = []
            for p in predicted:
                index = p.image_index
                frame = frames[index] if index is not None and index < len(frames) else None
                mention = self._mention(
                    p, prepared.words, prepared.spans, text=post.text, frame=frame
                )
                mention.image_index = index
                mentions.append(mention)
        return PostPrediction(
            tokens=prepared.words,
            entities=mentions,
            image_status=prepared.image_status,
            extra=post.record(),
            id=post.id,
            image_statuses=prepared.image_statuses,
        )

    def _frame(self, picture: Image.Image | None) -> tuple[Box, tuple[int, int]] | None:
        """The crop the model saw of a picture and the picture's size, for mapping boxes back
        to its pixels (None without a picture or a grounding head)."""
        if picture is None or not self.model.grounds:
            return None
        return self.processor.crop_box(*picture.size), picture.size

    @staticmethod
    def _mention(
        predicted: PredictedEntity,
        words: list[str],
        spans: list[Token],
        text: str | None,
        frame: tuple[Box, tuple[int, int]] | None = None,
    ) -> Mention:
        e = predicted.entity
        box = None
        if predicted.box_in_crop is not None and frame is not None:
            box = [round(v, 1) for v in box_to_pixels(predicted.box_in_crop, *frame)]
        char_start, char_end = spans[e.start].start, spans[e.end - 1].end
        surface = (
            text[char_start:char_end] if text is not None else " ".join(words[e.start : e.end])
        )
        return Mention(
            text=surface,
            type=e.type,
            start=e.start,
            end=e.end,
            char_start=char_start,
            char_end=char_end,
            score=predicted.score,
            attention=predicted.attention.astype("float64").round(6).tolist()
            if predicted.attention is not None
            else None,
            global_attention=None
            if predicted.global_attention is None
            else round(predicted.global_attention, 6),
            box=box,
            box_score=None if predicted.in_image is None else round(predicted.in_image, 6),
        )
