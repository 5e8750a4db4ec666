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


def train_corpus(root: Path, grounding: bool = False) -> dict[str, Path]:
    """:func:`write_corpus` under ``root`` and the tiny model trained on it with ``smner train``
    (into ``root/run``): the corpus's paths, ``run`` and ``model`` (``run/best``).

    With ``grounding``, each image gets a box file (the post's first entity in the left half,
    in ``boxes``) and the model the grounding head.
    """
    from smner.cli import main

    corpus = write_corpus(root)
    if grounding:
        from smner.data.boxes import format_voc

        boxes = corpus["boxes"] = root / "boxes"
        boxes.mkdir(exist_ok=True)
        for example, picture in fixture_posts():
            if picture is not None:
                first = example.entities[0]
                name = " ".join(example.tokens[first.start : first.end])
                voc = format_voc(str(example.image_id), picture.size, [(name, (0, 0, 32, 64))])
                (boxes / f"{example.image_id}.xml").write_text(voc, encoding="utf-8")
        config = yaml.safe_load(corpus["config"].read_text())
        config["data"]["box_dir"] = str(boxes)
        config["model"]["grounding"] = True
        corpus["config"].write_text(yaml.safe_dump(config))
    run = root / "run"
    assert main(["train", "--config", str(corpus["config"]), "--output", str(run)]) == 0
    return {**corpus, "run": run, "model": run / "best"}
