"""A small on-disk corpus (data files, images, tiny encoders, config) for pipeline tests."""

from __future__ import annotations

from pathlib import Path

import yaml

from smner.data.conll import format_conll
from smner.data.spans import entities_to_bio
from tests.tiny import fixture_posts, make_image_encoder, make_text_encoder, tiny_model_keys


def write_corpus(root: Path, copies: int = 3) -> dict[str, Path]:
    """train (the 4 fixture posts x ``copies``), dev (the 4 posts), images, encoders, config."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    posts = fixture_posts()
    examples = []
    for example, picture in posts:
        example.tags = entities_to_bio(example.entities, len(example.tokens))
        if picture is not None:
            picture.save(images / f"{example.image_id}.jpg")
        examples.append(example)
    (images / "2.jpg").unlink(missing_ok=True)  # post 2 has an id but no photo
    (root / "train.txt").write_text(format_conll(examples * copies), encoding="utf-8")
    (root / "dev.txt").write_text(format_conll(examples), encoding="utf-8")
    text = make_text_encoder(root / "text-encoder")
    image = make_image_encoder(root / "image-encoder")
    config = {
        "data": {
            "train_file": str(root / "train.txt"),
            "dev_file": str(root / "dev.txt"),
            "image_dir": str(images),
            "feature_cache_dir": str(root / "cache"),
        },
        "model": tiny_model_keys(text, image),
        "train": {
            "epochs": 8,
            "batch_size": 2,
            "head_lr": 0.003,
            "encoder_lr": 0.003,
            "warmup_ratio": 0.0,
            "patience": 0,
            "seed": 7,
            "progress": False,
        },
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return {
        "root": root,
        "config": root / "config.yaml",
        "dev": root / "dev.txt",
        "train": root / "train.txt",
        "images": images,
    }
