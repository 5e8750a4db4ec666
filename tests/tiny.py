"""Tiny random encoders and a 4-post fixture: fast tests of every code path, no downloads."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from transformers import BertConfig, BertModel, BertTokenizer, ResNetConfig, ResNetModel

from smner.config.model import ModelConfig
from smner.data.images import ImageStatus
from smner.data.types import Entity, Example
from smner.processing.batching import Batch, ImageInput

if TYPE_CHECKING:
    from smner.model.base import NERModel
    from smner.processing.processor import Processor

WORDS = [
    "george",
    "paris",
    "apple",
    "store",
    "in",
    "the",
    "at",
    "loves",
    "visited",
    "new",
    "york",
    "rt",
    "is",
    "great",
    "today",
    "with",
    "and",
    "a",
    "of",
    "@",
    "#",
    "http",
    "://",
    "t",
    "co",
]


def make_text_encoder(folder: Path) -> Path:
    """A 1-layer, 32-wide BERT with a small lowercasing WordPiece vocabulary."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789@#.,!?:/'\"-_&")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]
    vocab += [f"##{c}" for c in chars if c.isalnum()] + WORDS
    ids = {token: i for i, token in enumerate(dict.fromkeys(vocab))}
    BertTokenizer(vocab=ids, do_lower_case=True).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(ids),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=0.0,  # deterministic training steps, whatever the batch split
        attention_probs_dropout_prob=0.0,
    )
    BertModel(config).save_pretrained(folder)
    return folder


def make_image_encoder(folder: Path) -> Path:
    """A 3-stage, 16-wide ResNet (a 7x7 grid at 224 px, like the real backbones)."""
    config = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16, 16],
        depths=[1, 1, 1],
        downsample_in_first_stage=True,
    )
    ResNetModel(config).save_pretrained(folder)
    return folder


def tiny_model_keys(text: Path, image: Path) -> dict[str, object]:
    """The ``model`` section of a config that uses the tiny encoders and small layers."""
    return {
        "text_encoder": str(text),
        "image_encoder": f"hf:{image}",
        "hidden_size": 32,
        "attention_heads": 2,
        "width_embedding_dim": 8,
        "shape_embedding_dim": 8,
        "max_span_width": 3,
        "dropout": 0.0,
    }


def tiny_config(text: Path, image: Path, **overrides: object) -> ModelConfig:
    """The tiny config of the model type in ``overrides`` (SMNER by default); the small sizes
    a type has no setting for are left out."""
    values: dict[str, object] = {"labels": ["LOC", "ORG", "PER"], **tiny_model_keys(text, image)}
    values.update(overrides)
    own = {f.name for f in dataclasses.fields(ModelConfig.variants[values.get("type", "smner")])}
    return ModelConfig(**{k: v for k, v in values.items() if k in own})  # type: ignore[arg-type]


def solid_image(rgb: tuple[int, int, int], size: int = 64) -> Image.Image:
    rng = np.random.default_rng(sum(rgb))
    noise = rng.integers(-20, 20, size=(size, size, 3))
    pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def fixture_posts() -> list[tuple[Example, Image.Image | None]]:
    """Four posts: the same words take different types; one post has no image."""
    posts = [
        (
            ["George", "visited", "Paris", "today"],
            [Entity(0, 1, "PER"), Entity(2, 3, "LOC")],
            solid_image((200, 40, 40)),
        ),
        (
            ["RT", "@george", ":", "Apple", "store", "in", "New", "York"],
            [Entity(3, 4, "ORG"), Entity(6, 8, "LOC")],
            solid_image((40, 200, 40)),
        ),
        (
            ["the", "Paris", "of", "Apple", "is", "great"],
            [Entity(1, 2, "PER"), Entity(3, 4, "ORG")],
            None,
        ),
        (
            ["loves", "New", "York", "with", "George"],
            [Entity(1, 3, "LOC"), Entity(4, 5, "PER")],
            solid_image((40, 40, 200)),
        ),
    ]
    return [
        (Example(tokens=t, entities=e, image_id=str(i), post_id=str(i)), img)
        for i, (t, e, img) in enumerate(posts)
    ]


def make_encoders(root: Path) -> tuple[Path, Path]:
    """The tiny text and image encoders under ``root``, the same weights whatever ran before
    (the global random state is left as it was)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return make_text_encoder(root / "text"), make_image_encoder(root / "image")


def tiny_model(encoders: tuple[Path, Path], **overrides: object) -> tuple[NERModel, Processor]:
    """A new model of :func:`tiny_config` (seeded) and the collator that feeds it."""
    from smner.encoders.text import load_tokenizer
    from smner.model import build_model
    from smner.processing.processor import Processor

    torch.manual_seed(0)
    model = build_model(tiny_config(*encoders, **overrides))
    return model, Processor.for_model(model.config, load_tokenizer(encoders[0]))


def fixture_images(model: NERModel) -> list[ImageInput | None] | None:
    """The fixture posts' images as pixels the model takes; None for a text-only model."""
    encoder = model.image_encoder
    if encoder is None:
        return None
    return [
        ImageInput(pixels=encoder.preprocessing([img])[0]) if img is not None else None
        for _, img in fixture_posts()
    ]


def fixture_batch(
    model: NERModel,
    collator: Processor,
    labels: bool = True,
    attention_targets: Sequence[Mapping[Entity, Any] | None] | None = None,
    box_targets: Sequence[Mapping[Entity, Any] | None] | None = None,
) -> Batch:
    """The four fixture posts as one batch, with their images when the model uses images."""
    posts = fixture_posts()
    return collator(
        [ex.tokens for ex, _ in posts],
        [ex.entities for ex, _ in posts] if labels else None,
        fixture_images(model),
        attention_targets,
        box_targets,
    )


def train_steps(
    model: NERModel,
    batch: Batch,
    steps: int,
    lr: float,
    objective: Callable[[Any], torch.Tensor] | None = None,
    optimizer: type[torch.optim.Optimizer] = torch.optim.AdamW,
) -> None:
    """``steps`` optimizer steps on one batch in training mode, minimising the model's loss or
    ``objective(output)``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    step = optimizer(trainable, lr=lr)
    model.train()
    for _ in range(steps):
        step.zero_grad()
        output = model(batch, labels=model.labels_of(batch))
        (output.loss if objective is None else objective(output)).backward()
        step.step()


def save_tiny_model(root: Path) -> Path:
    """A saved, untrained tiny SMNER folder under ``root`` (``root/model``): deterministic
    predictions in a second, for tests of the prediction plumbing rather than of learning."""
    from smner.encoders.text import load_tokenizer
    from smner.model import build_model

    text, image = make_text_encoder(root / "text"), make_image_encoder(root / "image")
    build_model(tiny_config(text, image)).save_pretrained(
        root / "model", tokenizer=load_tokenizer(text)
    )
    return root / "model"


def posts_batch(model: Any, text: Path, posts: list, status: ImageStatus = ImageStatus.OK) -> Any:
    """A batch of ``(tokens, entities, picture, ...)`` posts for ``model`` (labels from the
    entities), each with its picture (``status`` OK) or read without it (e.g. NO_IMAGE)."""
    from smner.encoders.text import load_tokenizer
    from smner.predict.loop import visual_inputs
    from smner.processing.processor import PreparedPost, Processor

    processor = Processor.for_model(model.config, load_tokenizer(text))
    shown = status is ImageStatus.OK
    prepared = [PreparedPost(post[0], None, status, post[2] if shown else None) for post in posts]
    with torch.no_grad():
        images = visual_inputs(model, processor, prepared, "cpu")
    return processor([post[0] for post in posts], [post[1] for post in posts], images)
