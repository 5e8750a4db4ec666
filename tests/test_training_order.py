"""The order of training posts: length grouping pads little, stays random and replays."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import smner
from smner.config.experiment import TrainConfig, load_experiment
from smner.data.types import Example
from smner.encoders.text import load_tokenizer
from smner.processing.processor import Processor
from smner.training.data import group_by_length, training_order
from smner.training.run_folder import epoch_order
from tests.pipeline_fixture import write_corpus
from tests.tiny import make_encoders, tiny_config


def padding_ratio(order: list[int], lengths: list[int], batch: int) -> float:
    """Positions a batch pads to over the positions its posts fill."""
    padded = sum(
        max(lengths[i] for i in order[k : k + batch]) * len(order[k : k + batch])
        for k in range(0, len(order), batch)
    )
    return padded / sum(lengths)


def test_grouped_batches_pad_little_and_are_still_shuffled() -> None:
    rng = random.Random(3)
    lengths = [rng.randint(8, 70) for _ in range(1605)]
    order = epoch_order(len(lengths), seed=5, epoch=0)
    grouped = group_by_length(order, lengths, batch_size=16, seed=5, epoch=0)

    assert sorted(grouped) == list(range(len(lengths)))
    assert padding_ratio(order, lengths, 16) > 1.3
    assert padding_ratio(grouped, lengths, 16) < 1.05
    # the batches do not come shortest to longest: their lengths are shuffled
    firsts = [lengths[grouped[k]] for k in range(0, 1600, 16)]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
    # 1605 = 100 full batches and one of 5, which comes last
    assert set(grouped[-5:]) == set(order[1600:])


def test_grouping_is_a_function_of_seed_and_epoch() -> None:
    lengths = [random.Random(1).randint(1, 40) for _ in range(300)]

    def grouped(seed: int, epoch: int) -> list[int]:
        return group_by_length(epoch_order(300, seed, epoch), lengths, 8, seed, epoch)

    assert grouped(2, 1) == grouped(2, 1)  # a resumed run replays its epoch
    assert grouped(2, 1) != grouped(2, 2)
    assert grouped(2, 1) != grouped(3, 1)


def test_training_order_groups_by_subwords_only_when_asked(tmp_path: Path) -> None:
    text, image = make_encoders(tmp_path)
    processor = Processor.for_model(tiny_config(text, image), load_tokenizer(text))
    # a post of one word cut into many sub-words is long; three known words are short
    posts = [Example(tokens=["zq9x7k2v"]), Example(tokens=["a", "b", "c"])] * 8
    assert processor.subword_length(posts[0].tokens) > processor.subword_length(posts[1].tokens)

    plain = TrainConfig(batch_size=8, seed=4)
    assert training_order(plain, posts, processor, 0) == epoch_order(len(posts), 4, 0)
    grouped = training_order(
        TrainConfig(batch_size=8, seed=4, group_by_length=True), posts, processor, 0
    )
    batches = [{i % 2 for i in grouped[k : k + 8]} for k in (0, 8)]
    assert sorted(map(sorted, batches)) == [[0], [1]]  # each batch holds one kind of post


@pytest.mark.integration  # trains
@pytest.mark.parametrize("group", [False, True])
def test_a_length_grouped_run_learns_the_corpus(tmp_path: Path, group: bool) -> None:
    corpus = write_corpus(tmp_path, copies=4)
    config = load_experiment(str(corpus["config"]), [f"train.group_by_length={str(group).lower()}"])
    result = smner.train(config, tmp_path / "run")
    assert result.best_f1 == 1.0
