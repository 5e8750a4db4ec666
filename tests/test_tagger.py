from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from smner.evaluation.metrics import score_entities
from smner.model.crf import CRF
from smner.model.tagger import BIOTagger
from tests.tiny import fixture_batch, fixture_posts, tiny_model, train_steps


def test_crf_matches_brute_force() -> None:
    torch.manual_seed(0)
    crf = CRF(3)
    with torch.no_grad():
        crf.start.normal_()
        crf.end.normal_()
        crf.transitions.normal_()
    emissions = torch.randn(2, 4, 3)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    log_z = crf.log_partition(emissions, mask)
    best = crf.viterbi(emissions, mask)
    for b, length in enumerate([4, 3]):
        paths = list(itertools.product(range(3), repeat=length))
        scores = []
        for path in paths:
            tags = torch.tensor([list(path) + [0] * (4 - length)])
            scores.append(crf.path_score(emissions[b : b + 1], tags, mask[b : b + 1])[0])
        stacked = torch.stack(scores)
        assert torch.allclose(log_z[b], torch.logsumexp(stacked, 0), atol=1e-5)
        assert tuple(best[b]) == paths[int(stacked.argmax())]


@pytest.mark.integration  # learns the fixture (120 optimizer steps)
@pytest.mark.parametrize(
    ("head", "use_image"), [("softmax", False), ("crf", False), ("softmax", True), ("crf", True)]
)
def test_tagger_learns_the_fixture(encoders: tuple[Path, Path], head: str, use_image: bool) -> None:
    """Saving, loading and gradients are in tests/test_model_contract.py; here the tagger
    learns the four posts exactly."""
    model, collator = tiny_model(encoders, type="bio-tagger", tagger_head=head, use_image=use_image)
    assert isinstance(model, BIOTagger)
    batch = fixture_batch(model, collator)
    train_steps(model, batch, 120, lr=5e-3)
    predicted = model.predict(batch)
    gold = [e.entities for e, _ in fixture_posts()]
    assert score_entities(gold, [[p.entity for p in x] for x in predicted]).f1 == 1.0
