"""Model folders from the Hugging Face Hub, tested offline on a cache laid out by hand."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smner.errors import SmnerError
from smner.predict.predictor import Predictor
from smner.saved.hub import parse_repo_id, resolve_model_dir
from tests.test_serve import POST

pytest.importorskip("huggingface_hub", reason="the Hub tests need smner[hub]")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OLDER = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.fixture(scope="module")
def cache(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``org/tiny`` as huggingface_hub caches it: refs/<branch or tag> -> snapshots/<commit>."""
    root = tmp_path_factory.mktemp("hf-cache")
    repo = root / "models--org--tiny"
    for commit in (COMMIT, OLDER):
        shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "refs" / "v1").write_text(OLDER)
    return root


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("org/name", ("org/name", None)),
        ("org/name@v1.2", ("org/name", "v1.2")),
        ("my-org/smner.t17@refs/pr/3", ("my-org/smner.t17", "refs/pr/3")),
        ("runs/t17/best", None),
        ("./org/name", None),
        ("/abs/path", None),
        ("name", None),
        ("../up/name", None),
    ],
)
def test_repo_ids(name: str, parsed: tuple[str, str | None] | None) -> None:
    assert parse_repo_id(name) == parsed


def test_a_local_folder_wins_and_a_missing_one_is_named(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert resolve_model_dir(str(tiny_model_dir)) == tiny_model_dir
    with pytest.raises(SmnerError, match=r"runs/t17/best: no such model folder"):
        resolve_model_dir("runs/t17/best")


def test_from_pretrained_reads_the_cache_offline(tiny_model_dir: Path, cache: Path) -> None:
    local = Predictor.from_pretrained(tiny_model_dir)
    hub = Predictor.from_pretrained("org/tiny", cache_dir=cache, local_files_only=True)
    assert hub.predict(POST).to_dict() == local.predict(POST).to_dict()
    folder = resolve_model_dir("org/tiny@v1", cache_dir=cache, local_files_only=True)
    assert folder == cache / "models--org--tiny" / "snapshots" / OLDER
    same = resolve_model_dir("org/tiny", revision="v1", cache_dir=cache, local_files_only=True)
    assert same == folder


def test_offline_and_not_cached_says_so_and_how_to_fix(cache: Path) -> None:
    with pytest.raises(SmnerError) as error:
        resolve_model_dir("org/absent", cache_dir=cache, local_files_only=True)
    message = str(error.value)
    assert "org/absent is not a local folder and not in the Hugging Face cache" in message
    assert "HF_HUB_OFFLINE=1" in message and "hf download org/absent" in message
    with pytest.raises(SmnerError, match=r"org/tiny \(revision v9\) is not a local folder"):
        resolve_model_dir("org/tiny@v9", cache_dir=cache, local_files_only=True)
    with pytest.raises(SmnerError, match="two revisions"):
        resolve_model_dir("org/tiny@v1", revision="main", cache_dir=cache)


def test_without_huggingface_hub_the_message_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(SmnerError, match=r"needs huggingface_hub: pip install 'smner\[hub\]'"):
        resolve_model_dir("org/tiny")


@pytest.mark.integration  # three smner processes
def test_cli_model_accepts_a_repo_id_with_hf_hub_offline(cache: Path, tiny_model_dir: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    env.pop("HF_HOME", None)

    def smner(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "smner", *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
            timeout=300,
        )

    hub = smner("predict", "--model", "org/tiny", "--revision", "v1", "--text", POST)
    local = smner("predict", "--model", str(tiny_model_dir), "--text", POST)
    assert hub.returncode == 0, hub.stderr
    assert hub.stdout == local.stdout
    missing = smner("evaluate", "--model", "org/absent", "--data", "x.txt")
    assert missing.returncode == 1
    (line,) = missing.stderr.strip().splitlines()
    assert line.startswith("smner: error: org/absent is not a local folder and not in the")
    assert "HF_HUB_OFFLINE=1" in line
