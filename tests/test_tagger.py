from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from smner.data.batching import ImageInput
from smner.encoders.text import load_tokenizer
from smner.metrics import score_entities
from smner.model import BIOTagger, NERModel, build_collator, build_model
from smner.model.crf import CRF
from tests.tiny import fixture_posts, make_image_encoder, make_text_encoder, tiny_config


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("encoders")
    return make_text_encoder(root / "text"), make_image_encoder(root / "image")


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


@pytest.mark.parametrize(
    ("head", "use_image"), [("softmax", False), ("crf", False), ("softmax", True), ("crf", True)]
)
def test_tagger_trains_saves_and_loads(
    encoders: tuple[Path, Path], tmp_path: Path, head: str, use_image: bool
) -> None:
    torch.manual_seed(0)
    config = tiny_config(*encoders, type="bio-tagger", tagger_head=head, use_image=use_image)
    model = build_model(config)
    assert isinstance(model, BIOTagger)
    collator = build_collator(model.config, load_tokenizer(encoders[0]))
    posts = fixture_posts()
    images = None
    if use_image:
        images = [
            ImageInput(pixels=model.image.preprocessing([img])[0]) if img is not None else None
            for _, img in posts
        ]
    batch = collator([e.tokens for e, _ in posts], [e.entities for e, _ in posts], images)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    for step in range(120):
        optimizer.zero_grad()
        loss = model(batch, labels=model.labels_of(batch)).loss
        assert loss is not None and torch.isfinite(loss)
        loss.backward()
        if step == 0:
            missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing
        optimizer.step()
    predicted = model.predict(batch)
    scores = score_entities(
        [e.entities for e, _ in posts], [[p.entity for p in x] for x in predicted]
    )
    assert scores.f1 == 1.0
    model.save_pretrained(tmp_path / "m")
    loaded = NERModel.from_pretrained(tmp_path / "m")
    model.eval()
    assert torch.equal(loaded(batch).logits, model(batch).logits)
