from __future__ import annotations

from pathlib import Path

import pytest

from smner.predict.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The real benchmark files beside the checkout; skip where they are absent."""
    if not (SHARED_DATA / "twitter2015" / "train.txt").is_file():
        pytest.skip(f"benchmark data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny text and image encoders of :mod:`tests.tiny`, written once per session."""
    from tests.tiny import make_encoders

    return make_encoders(tmp_path_factory.mktemp("encoders"))


def real_files() -> list[Path]:
    return sorted(SHARED_DATA.glob("twitter20*/*.txt"))


@pytest.fixture(scope="module")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The serving tests' tiny trained model (trained once per session; see test_serve)."""
    from tests.test_serve import trained_model

    return trained_model(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(model_root: Path):

    return Predictor.from_pretrained(model_root / "run" / "best")
