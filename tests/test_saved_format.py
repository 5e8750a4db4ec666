"""Model folders written by smner 0.1.0 still load and predict exactly what they predicted then.

``tests/fixtures/saved-0.1.0`` holds tiny trained folders of every model kind as that version
wrote them (no ``processor.json``), with its predictions; ``make.py`` there records how.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from smner.config.model import BIOTaggerConfig, SMNERConfig
from smner.errors import SmnerWarning
from smner.predict.predictor import Predictor
from smner.processing.processor import Processor
from smner.saved.folder import PROCESSOR_FILE, load_config

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saved-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def close(got: Any, want: Any, where: str = "") -> None:
    """``got`` equals ``want``, numbers to 2e-6 (they were written rounded to 6 places)."""
    if isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, abs=2e-6), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key in want:
            close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            close(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_old_folder_predicts_what_it_did(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not (FIXTURE / kind / PROCESSOR_FILE).exists()  # the old layout
    monkeypatch.chdir(FIXTURE)  # the posts' image paths are relative to it
    predictor = Predictor.from_pretrained(FIXTURE / kind)
    got = [p.to_dict(explain=True) for p in predictor.predict_many(EXPECTED[kind]["posts"])]
    close(got, EXPECTED[kind]["predictions"], kind)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_old_folder_resaved_has_a_processor_and_predicts_the_same(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = Predictor.from_pretrained(FIXTURE / kind)
    old.save_pretrained(tmp_path / kind)
    assert (tmp_path / kind / PROCESSOR_FILE).is_file()
    processor = Processor.from_pretrained(tmp_path / kind)
    assert processor.to_dict() == old.processor.to_dict()
    monkeypatch.chdir(FIXTURE)
    again = Predictor.from_pretrained(tmp_path / kind)
    got = [p.to_dict(explain=True) for p in again.predict_many(EXPECTED[kind]["posts"])]
    close(got, EXPECTED[kind]["predictions"], kind)


def test_an_old_flat_config_reads_as_the_config_of_its_model_type(tmp_path: Path) -> None:
    with pytest.warns(SmnerWarning, match=r"model\.hidden_size.*not a setting of a bio-tagger"):
        tagger = load_config(FIXTURE / "bio-tagger")  # 0.1.0 wrote every key, set in a test
    assert isinstance(tagger, BIOTaggerConfig) and not hasattr(tagger, "use_ib")
    assert not tagger.uses_ib and not tagger.uses_cross_attention
    smner = load_config(FIXTURE / "smner")
    assert isinstance(smner, SMNERConfig) and smner.uses_ib and smner.uses_cross_attention
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmnerWarning)
        Predictor.from_pretrained(FIXTURE / "bio-tagger").save_pretrained(tmp_path / "tagger")
    written = json.loads((tmp_path / "tagger" / "config.json").read_text())["model"]
    assert "use_ib" not in written and written["tagger_head"] == "softmax"
    with warnings.catch_warnings():
        warnings.simplefilter("error", SmnerWarning)  # a folder of this version reads cleanly
        assert load_config(tmp_path / "tagger") == tagger
