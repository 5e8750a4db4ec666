"""The fixtures shared by the test files; each name has one meaning everywhere.

Models (built once per session; tests only read them; a test that changes a model folder copies
it to its ``tmp_path`` first, and the session checks at its end that none was changed):

- ``encoders``: the tiny text and image encoders of :mod:`tests.tiny`.
- ``tiny_model_dir``: a saved, untrained tiny SMNER folder: deterministic predictions in a
  fraction of a second, for the plumbing of prediction rather than for learning.
  ``tiny_predictor`` is its Predictor (one per test module).
- ``post_images``: the photos of the fixture posts, ``<id>.jpg`` (post 2 has none).
- ``trained_run``: the pipeline corpus (:func:`tests.pipeline_fixture.write_corpus`) and the tiny
  model trained on it, 8 epochs, once per session: ``root``, ``config``, ``train``, ``dev``,
  ``images``, ``run`` (the run folder) and ``model`` (``run/best``). It finds George (PER) and
  Paris (LOC) in "George visited Paris today" with ``images/0.jpg``; other posts are asserted
  only on what every training run gets right (training is not bit-reproducible).
  ``trained_model_dir`` is ``trained_run["model"]``; ``trained_predictor`` its Predictor.
- ``trained_grounding_run``: the same with a box file per image and the grounding head; also
  ``boxes``.

A test that asks for a trained model is an ``integration`` test (marked here, at collection);
so are, by their own marks, tests that train or learn, and tests that start Ray,
torch.distributed, a browser, a benchmark suite, worker processes or smner processes. What is
left (``pytest -m "not integration"``) is the inner loop: it runs in this process, but for a
few short processes that load no model (image memory, closed pipes, ``--version``). ``slow`` tests
(benchmarks) run only when -m names them.

Benchmark data: ``benchmark_data`` is a :class:`tests.benchmark_fixture.Benchmark`; a test that
takes it runs on the generated benchmark (always) and on the real files of ``../shared/data``
where they are present (``[generated]`` and ``[real]`` in the test id).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.benchmark_fixture import Benchmark, write_benchmark

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: fixtures whose tests train a model (or read one trained for the session)
TRAINED_FIXTURES = frozenset(
    {"trained_run", "trained_model_dir", "trained_predictor", "trained_grounding_run"}
)


def pytest_configure(config: pytest.Config) -> None:
    """One intra-op thread for the tests' own process: the models here are tiny, and on two
    shared cores a second thread costs more in hand-offs than it computes (the in-process
    tests ran two to three times slower with two), and it leaves a core to the processes some
    tests start. Those processes keep their own setting."""
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests of a trained model ``integration``; leave ``slow`` tests out unless the
    -m expression names them (``pytest -m slow``), whatever else it selects."""
    for item in items:
        if TRAINED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)
    if "slow" in (config.getoption("markexpr") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow") is not None]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item.get_closest_marker("slow") is None]


# --- benchmark data -------------------------------------------------------------------------


def real_benchmark() -> Benchmark | None:
    """The real benchmark files beside the checkout, or None where they are absent."""
    if (SHARED_DATA / "twitter2015" / "train.txt").is_file():
        return Benchmark(SHARED_DATA, generated=False)
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "benchmark_data" in metafunc.fixturenames:
        sources = ["generated"] + (["real"] if real_benchmark() is not None else [])
        metafunc.parametrize("benchmark_data", sources, indirect=True, scope="session")


@pytest.fixture(scope="session")
def generated_benchmark(tmp_path_factory: pytest.TempPathFactory) -> Benchmark:
    """The generated stand-in for the benchmark (see :mod:`tests.benchmark_fixture`)."""
    return write_benchmark(tmp_path_factory.mktemp("benchmark"))


@pytest.fixture(scope="session")
def benchmark_data(request: pytest.FixtureRequest) -> Benchmark:
    """The generated benchmark, or the real one (see ``pytest_generate_tests``)."""
    if request.param == "real":
        real = real_benchmark()
        assert real is not None
        return real
    return request.getfixturevalue("generated_benchmark")


# --- tiny models ----------------------------------------------------------------------------


def folder_digest(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder``."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read_only(folder: Path, what: str) -> Iterator[Path]:
    """Yield ``folder``; afterwards fail if a test changed anything in it."""
    before = folder_digest(folder)
    yield folder
    after = folder_digest(folder)
    changed = sorted(set(before) ^ set(after) | {k for k in before if after.get(k) != before[k]})
    assert not changed, (
        f"a test changed the shared {what} ({folder}): {changed[:5]}; "
        "copy it to tmp_path before changing it"
    )


@pytest.fixture(scope="session")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny text and image encoders of :mod:`tests.tiny`, written once per session."""
    from tests.tiny import make_encoders

    return make_encoders(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory, encoders: tuple[Path, Path]
) -> Iterator[Path]:
    """A saved, untrained tiny SMNER folder (seeded: the same weights in every session)."""
    import torch

    from smner.encoders.text import load_tokenizer
    from smner.model import build_model
    from tests.tiny import tiny_config

    folder = tmp_path_factory.mktemp("tiny-model") / "model"
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(tiny_config(*encoders))
    model.save_pretrained(folder, tokenizer=load_tokenizer(encoders[0]))
    yield from read_only(folder, "tiny model folder")


@pytest.fixture(scope="module")
def tiny_predictor(tiny_model_dir: Path) -> Any:
    from smner.predict.predictor import Predictor

    return Predictor.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def post_images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The fixture posts' photos as ``<id>.jpg``; post 2 has none."""
    from tests.tiny import fixture_posts

    folder = tmp_path_factory.mktemp("post-images")
    for example, picture in fixture_posts():
        if picture is not None:
            picture.save(folder / f"{example.image_id}.jpg")
    yield from read_only(folder, "post images")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The pipeline corpus and the tiny model trained on it (see the module docstring)."""
    from tests.pipeline_fixture import train_corpus

    run = train_corpus(tmp_path_factory.mktemp("trained"))
    yield from _read_only_run(run)


@pytest.fixture(scope="session")
def trained_model_dir(trained_run: dict[str, Path]) -> Path:
    return trained_run["model"]


@pytest.fixture(scope="module")
def trained_predictor(trained_model_dir: Path) -> Any:
    from smner.predict.predictor import Predictor

    return Predictor.from_pretrained(trained_model_dir)


@pytest.fixture(scope="session")
def trained_grounding_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The pipeline corpus with a box file per image (each post's first entity in the left
    half) and a tiny model trained on it with the grounding head, once per session."""
    from tests.pipeline_fixture import train_corpus

    run = train_corpus(tmp_path_factory.mktemp("trained-grounding"), grounding=True)
    yield from _read_only_run(run)


def _read_only_run(run: dict[str, Path]) -> Iterator[dict[str, Path]]:
    for _ in read_only(run["root"], "trained run and its corpus"):
        yield run
