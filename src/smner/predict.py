"""Prediction from Python: text (+ image) in, typed entities (+ where the model looked) out.

>>> from smner import Predictor
>>> predictor = Predictor.from_pretrained("runs/t17/best")
>>> predictor.predict("George visited Paris", image="photo.jpg").entities
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from smner.data.batching import ImageInput
from smner.data.images import ImageLimits, ImageStatus, load_image_bytes, load_image_file
from smner.data.tweet_tokenizer import Token, tokenize_tweet
from smner.encoders.text import load_tokenizer
from smner.errors import SmnerError
from smner.model import NERModel, build_collator
from smner.model.base import TOKENIZER_DIR, PredictedEntity
from smner.training import batches, resolve_device

ImageLike = str | Path | bytes | Image.Image | None


@dataclass
class Mention:
    """One predicted entity, with token and character offsets (ends exclusive)."""

    text: str
    type: str
    start: int
    end: int
    char_start: int
    char_end: int
    score: float
    attention: list[list[float]] | None = None  # [h][w] over the image grid
    global_attention: float | None = None

    def to_dict(self, explain: bool = False) -> dict[str, Any]:
        record: dict[str, Any] = {
            "text": self.text,
            "type": self.type,
            "start": self.start,
            "end": self.end,
            "char_start": self.char_start,
            "char_end": self.char_end,
            "score": round(self.score, 6),
        }
        if explain:
            record["attention"] = self.attention
            record["global_attention"] = self.global_attention
        return record


@dataclass
class PostPrediction:
    tokens: list[str]
    entities: list[Mention]
    image_status: str  # "ok", "no image", or why the image was not used
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, explain: bool = False) -> dict[str, Any]:
        record = {**self.extra, "tokens": self.tokens, "image_status": self.image_status}
        record["entities"] = [m.to_dict(explain) for m in self.entities]
        return record


@dataclass
class PostInput:
    """A post to predict on: raw ``text`` or pre-split ``tokens``, and an optional image."""

    text: str | None = None
    tokens: list[str] | None = None
    image: ImageLike = None


class Predictor:
    def __init__(
        self,
        model: NERModel,
        tokenizer: Any,
        device: str = "cpu",
        limits: ImageLimits | None = None,
        max_tokens: int = 200,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.collator = build_collator(model.config, tokenizer)
        self.limits = limits or ImageLimits()
        self.max_tokens = max_tokens

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str = "cpu", **kwargs: Any
    ) -> Predictor:
        model = NERModel.from_pretrained(directory)
        tokenizer = load_tokenizer(Path(directory) / TOKENIZER_DIR)
        return cls(model, tokenizer, device=device, **kwargs)

    def predict(self, text: str | Sequence[str], image: ImageLike = None) -> PostPrediction:
        """Entities of one post; ``text`` is raw text or a list of tokens."""
        post = PostInput(text=text) if isinstance(text, str) else PostInput(tokens=list(text))
        post.image = image
        return self.predict_many([post])[0]

    def predict_many(
        self, posts: Sequence[PostInput], batch_size: int = 32
    ) -> list[PostPrediction]:
        """Predictions in the order of ``posts``; batches group posts of similar length, so
        short posts do not pay for the padding of long ones."""
        order = sorted(range(len(posts)), key=lambda i: _approximate_length(posts[i]))
        results: list[PostPrediction | None] = [None] * len(posts)
        for chunk in batches(order, batch_size):
            predictions = self._predict_batch([posts[i] for i in chunk])
            for i, prediction in zip(chunk, predictions, strict=True):
                results[i] = prediction
        return results  # type: ignore[return-value]

    # --- internals -------------------------------------------------------------------------

    def tokenize(self, post: PostInput) -> tuple[list[str], list[Token]]:
        """The post's words and their character spans, or SmnerError if the model cannot take it.

        Callers with many posts check each first, so that one bad post stops the run before
        any prediction is made.
        """
        for value in [post.text, *(post.tokens or [])]:
            if isinstance(value, str) and not _encodable(value):
                raise SmnerError(
                    "the post holds a lone surrogate code point; expected text valid in UTF-8"
                )
        if post.tokens is not None:
            words = [str(t) for t in post.tokens]
            spans, offset = [], 0
            for w in words:
                spans.append(Token(w, offset, offset + len(w)))
                offset += len(w) + 1
        elif post.text is not None:
            spans = tokenize_tweet(post.text)
            words = [t.text for t in spans]
        else:
            raise SmnerError("a post needs 'text' or 'tokens'")
        if not words:
            raise SmnerError("the post has no tokens; expected non-empty text or tokens")
        if len(words) > self.max_tokens:
            raise SmnerError(
                f"the post has {len(words)} tokens; expected at most {self.max_tokens}"
            )
        return words, spans

    def _image(self, image: ImageLike) -> tuple[Image.Image | None, str]:
        if image is None:
            return None, "no image"
        if isinstance(image, Image.Image):
            return image.convert("RGB"), ImageStatus.OK.value
        if isinstance(image, bytes):
            picture, status = load_image_bytes(image, self.limits)
        else:
            picture, status = load_image_file(Path(image), self.limits)
        return picture, status.value

    def _predict_batch(self, posts: Sequence[PostInput]) -> list[PostPrediction]:
        prepared = [self.tokenize(p) for p in posts]
        loaded = [self._image(p.image) for p in posts]
        image_inputs: list[ImageInput | None] | None = None
        encoder = getattr(self.model, "image", None)
        if self.model.config.use_image and encoder is not None:
            pictures = [pic for pic, _ in loaded if pic is not None]
            inputs: list[ImageInput | None] = [None] * len(posts)
            if pictures:
                with torch.no_grad():
                    features = encoder(encoder.preprocessing(pictures).to(self.device))
                k = 0
                for i, (pic, _) in enumerate(loaded):
                    if pic is not None:
                        inputs[i] = ImageInput(
                            pooled=features.pooled[k].cpu(), regions=features.regions[k].cpu()
                        )
                        k += 1
            image_inputs = inputs
        batch = self.collator([w for w, _ in prepared], None, image_inputs).to(self.device)
        output_entities = self.model.predict(batch)
        return [
            PostPrediction(
                tokens=words,
                entities=[self._mention(p, words, spans, text=posts[i].text) for p in predicted],
                image_status=status
                if self.model.config.use_image or status == "no image"
                else "ignored (text-only model)",
            )
            for i, ((words, spans), (_, status), predicted) in enumerate(
                zip(prepared, loaded, output_entities, strict=True)
            )
        ]

    @staticmethod
    def _mention(
        predicted: PredictedEntity, words: list[str], spans: list[Token], text: str | None
    ) -> Mention:
        e = predicted.entity
        char_start, char_end = spans[e.start].start, spans[e.end - 1].end
        surface = (
            text[char_start:char_end] if text is not None else " ".join(words[e.start : e.end])
        )
        return Mention(
            text=surface,
            type=e.label,
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
        )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _approximate_length(post: PostInput) -> int:
    """Characters of the post, without tokenizing it: enough to sort posts by length."""
    if post.tokens is not None:
        return sum(len(str(t)) + 1 for t in post.tokens)
    return len(post.text or "")
