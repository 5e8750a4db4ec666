"""Model folders written by smner 0.1.0 still load and predict exactly what they predicted then.

``tests/fixtures/saved-0.1.0`` holds tiny trained folders of every model kind as that version
wrote them (no ``processor.json``), with its predictions; ``make.py`` there records how.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smner.predict import Predictor
from smner.processor import PROCESSOR_FILE, Processor

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
