"""What a run learns from: its posts, read and checked before the first step, what their
boxes teach, and the facts of its data that the model card states."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from smner.config.check import to_dict
from smner.config.experiment import DataConfig, ExperimentConfig, TrainConfig
from smner.config.model import ModelConfig
from smner.data.conll import Corpus
from smner.data.mnermi import read_corpus
from smner.data.types import Example
from smner.encoders.text import load_tokenizer, resolve_text_encoder
from smner.errors import DataFormatError, SmnerError
from smner.model import build_model
from smner.model.base import NERModel
from smner.predict.loop import batches
from smner.processing.processor import Processor
from smner.training.run_folder import epoch_order
from smner.training.targets import BoxSupervision, box_supervision


def dev_source(data: DataConfig) -> str:
    """Where the dev posts come from, as errors and the model card name it."""
    if data.dev_holdout:
        return f"{data.train_file} (held-out {data.dev_holdout:.0%})"
    return data.dev_file


def hold_out(examples: list[Example], share: float) -> tuple[list[Example], list[Example]]:
    """``(train, dev)``: ``share`` of the posts, by a fixed shuffle, become the dev posts; the
    rest keep their file order. The same file gives the same split on every run and resume."""
    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    held = order[: math.floor(len(order) * share + 1e-9)]
    kept = sorted(set(order) - set(held))
    return [examples[i] for i in kept], [examples[i] for i in held]


def group_by_length(
    order: Sequence[int], lengths: Sequence[int], batch_size: int, seed: int, epoch: int
) -> list[int]:
    """``order`` rearranged so that each run of ``batch_size`` posts is of similar length.

    Each window of 50 batches of the shuffled ``order`` is sorted by length and cut into
    batches, and the full batches are shuffled (the one short batch stays last), as Hugging
    Face's ``group_by_length`` does: the batches pad little yet are still drawn at random.
    A function of its arguments only, so a resumed run replays it.
    """
    window = batch_size * 50
    chunks = [
        chunk
        for start in range(0, len(order), window)
        for chunk in batches(
            sorted(order[start : start + window], key=lambda i: lengths[i], reverse=True),
            batch_size,
        )
    ]
    # windows hold whole batches, so only the very last one can be short
    short = chunks.pop() if chunks and len(chunks[-1]) < batch_size else []
    random.Random(seed * 1000 + epoch).shuffle(chunks)
    return [i for chunk in chunks for i in chunk] + short


def training_order(
    config: TrainConfig, train: Sequence[Example], processor: Processor, epoch: int
) -> list[int]:
    """The training posts of one epoch in the order its steps take them."""
    order = epoch_order(len(train), config.seed, epoch)
    if not config.group_by_length:
        return order
    lengths = [processor.subword_length(example.tokens) for example in train]
    step_posts = config.batch_size * config.accumulate
    return group_by_length(order, lengths, step_posts, config.seed, epoch)


def read_training_data(config: ExperimentConfig) -> tuple[list[Example], list[Example]]:
    """The training and dev posts; the test file is only checked (it is scored at the end)."""
    data = config.data
    if data.dev_holdout and data.dev_file:
        raise SmnerError(
            "data.dev_holdout and data.dev_file are both set: the epoch is selected on one of "
            "them; unset dev_file (score it as data.test_file) or set dev_holdout: 0"
        )
    if not data.train_file or not (data.dev_file or data.dev_holdout):
        raise SmnerError(
            "data.train_file must be set, and data.dev_file or data.dev_holdout (a share of "
            "the training posts to select on)"
        )
    limit = data.max_file_mb * 2**20
    if data.test_file:
        # Checked now, scored only after training: a broken file should not wait that long.
        if not Path(data.test_file).is_file():
            raise SmnerError(f"data.test_file: {data.test_file} does not exist")
        read_corpus(data.test_file, data.label_aliases, limit)
    train = read_corpus(data.train_file, data.label_aliases, limit).examples
    if data.dev_holdout:
        train, dev = hold_out(train, data.dev_holdout)
    else:
        dev = read_corpus(data.dev_file, data.label_aliases, limit).examples
    for path, examples in ((data.train_file, train), (dev_source(data), dev)):
        if not examples:
            raise DataFormatError(path, None, "has no posts; expected at least one")
    return train, dev


def new_model(config: ModelConfig, train: Sequence[Example]) -> tuple[NERModel, Processor]:
    """A new pretrained model of ``config`` and its processor; labels, when the config lists
    none, are the entity types of the training posts."""
    if not config.labels:
        config = replace(config, labels=sorted({e.type for ex in train for e in ex.entities}))
    model = build_model(config)
    tokenizer = load_tokenizer(resolve_text_encoder(config.text_encoder))
    return model, Processor.for_model(model.config, tokenizer)


def check_labels(
    config: ExperimentConfig, labels: Sequence[str], train: list[Example], dev: list[Example]
) -> None:
    """Refuse a training entity type the model has no label for, before any step fails on it.

    Dev types are checked only against labels set in the config: with labels taken from
    the training file, a dev type it lacks is scored as a miss.
    """
    data = config.data
    files = [(data.train_file, train)]
    if config.model.labels:
        files.append((data.train_file if data.dev_holdout else data.dev_file, dev))
    known = set(labels)
    for path, examples in files:
        for ex in examples:
            for e in ex.entities:
                if e.type in known:
                    continue
                name = repr(e.type)
                raw = ex.tags[e.start][2:] if ex.tags else e.type
                if raw != e.type:
                    name = f"{raw!r} (read as {e.type!r} through data.label_aliases)"
                raise DataFormatError(
                    path,
                    ex.token_line(e.start),
                    f"entity type {name} is not in model.labels {list(labels)}; add it "
                    "there or map it to one of them with data.label_aliases",
                )


def box_targets(
    model: NERModel,
    processor: Processor,
    train: list[Example],
    data: DataConfig,
    log: Callable[[str], None],
) -> BoxSupervision:
    """What ``data.box_dir``'s boxes teach the model (nothing when it is not set)."""
    if not data.box_dir:
        if model.grounds:
            raise SmnerError(
                "model.grounding is on, but data.box_dir is not set: the grounding head "
                "learns from the boxes of a folder of VOC XML files"
            )
        return BoxSupervision(None, None)
    targets = box_supervision(model, processor, train, data.box_dir, data.image_dir)
    if targets.attention is None and targets.grounding is None:
        log("data.box_dir is set, but this model has no span attention to supervise")
    else:
        log(targets.summary(train))
    return targets


def run_card_facts(
    config: ExperimentConfig,
    train: list[Example],
    dev: list[Example],
    command: str | None,
    resumed: bool,
) -> dict[str, Any]:
    """What the model card states of the data and the run (see :mod:`smner.saved.card`)."""
    from smner.data.stats import corpus_stats
    from smner.saved.card import data_facts, environment

    data, width = config.data, config.model.max_span_width
    splits = {
        "train": (data.train_file, train),
        "dev": (dev_source(data), dev),
    }
    facts_data = {
        split: data_facts(path, corpus_stats(Corpus(path, examples), width))
        for split, (path, examples) in splits.items()
    }
    if data.test_file:
        test = read_corpus(data.test_file, data.label_aliases)
        facts_data["test"] = data_facts(data.test_file, corpus_stats(test, width))
    return {
        "command": command,
        "resumed": resumed,
        "data": facts_data,
        "images": {},
        "config": to_dict(config),
        "environment": environment(),
    }
