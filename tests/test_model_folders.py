"""Broken or hostile model folders give one clear error before anything large is built."""

from __future__ import annotations

import json
import os
import shutil
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smner.errors import SmnerError, SmnerWarning
from smner.model import build_model
from smner.model.base import NERModel
from smner.predict.predictor import Predictor
from tests.tiny import tiny_config


@pytest.fixture
def folder(tiny_model_dir: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the tiny model folder, for a test to break."""
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    yield copy


def edit_config(folder: Path, change: Callable[[dict], None]) -> None:
    path = folder / "config.json"
    payload = json.loads(path.read_text())
    change(payload)
    path.write_text(json.dumps(payload))


def set_model(key: str, value: object) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        edit_config(folder, lambda p: p["model"].__setitem__(key, value))

    return apply


def set_text(key: str, value: object) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        edit_config(folder, lambda p: p["model"]["text_encoder_config"].__setitem__(key, value))

    return apply


def flip_weight_byte(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))


def bad_header(folder: Path) -> None:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes((2**40).to_bytes(8, "little") + data[8:])
    edit_config(folder, lambda p: p.pop("weights_sha256"))


def deep_config(folder: Path) -> None:
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)


def nested_model_config(folder: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    (folder / "config.json").write_text('{"format_version": 1, "model": ' + deep + "}")


def preprocessing_size(folder: Path) -> None:
    edit_config(
        folder, lambda p: p["model"]["image_preprocessing"].update(size=50000, resize=50000)
    )


BROKEN = {
    "shape mismatch": (set_model("width_embedding_dim", 16), "has shape"),
    "flipped weight byte": (flip_weight_byte, "does not match the SHA-256"),
    "bad safetensors header": (bad_header, "not a valid safetensors file"),
    "zero hidden size": (set_model("hidden_size", 0), "model.hidden_size: 0 is out of range"),
    "negative span width": (set_model("max_span_width", -1), "out of range"),
    "huge span width": (set_model("max_span_width", 1_000_000_000), "out of range"),
    "negative encoder size": (set_text("hidden_size", -4), "config.json"),
    "huge encoder size": (set_text("intermediate_size", 10**9), "has shape"),
    "unknown encoder type": (set_text("model_type", "no-such-encoder"), "not a model type"),
    "nested config": (deep_config, "nested too deeply"),
    "nested model section": (nested_model_config, "nested too deeply"),
    "image size 50000": (preprocessing_size, "over 4096 px"),
    "duplicate labels": (set_model("labels", ["PER", "PER", "LOC", "ORG"]), "duplicate"),
    "labels not strings": (set_model("labels", [1, 2]), "expected a string"),
    "empty tokenizer.json": (
        lambda f: (f / "tokenizer" / "tokenizer.json").write_text("{}"),
        "cannot load a tokenizer",
    ),
    "missing weights": (lambda f: (f / "model.safetensors").unlink(), "missing"),
    "config not json": (lambda f: (f / "config.json").write_text("{"), "not valid JSON"),
}


@pytest.mark.filterwarnings("ignore::smner.errors.SmnerWarning")
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_folder_is_one_clear_error(name: str, folder: Path) -> None:
    breaker, message = BROKEN[name]
    breaker(folder)
    with pytest.raises(SmnerError) as info:
        Predictor.from_pretrained(folder)
    text = str(info.value)
    assert message in text and "\n" not in text, text


def test_intact_folder_loads_and_files_follow_the_umask(
    encoders: tuple[Path, Path], tmp_path: Path
) -> None:
    from smner.encoders.text import load_tokenizer

    text, image = encoders
    saved = tmp_path / "model"
    previous = os.umask(0o022)
    try:
        build_model(tiny_config(text, image)).save_pretrained(saved, tokenizer=load_tokenizer(text))
    finally:
        os.umask(previous)
    assert NERModel.from_pretrained(saved) is not None
    payload = json.loads((saved / "config.json").read_text())
    assert len(payload["weights_sha256"]) == 64
    for name in ("model.safetensors", "config.json"):
        assert stat.S_IMODE((saved / name).stat().st_mode) == 0o644, name


def test_checksum_can_be_skipped(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01  # a weight value, not the header
    path.write_bytes(bytes(data))
    with pytest.raises(SmnerError, match="SMNER_SKIP_WEIGHTS_CHECKSUM=1"):
        NERModel.from_pretrained(folder)
    assert NERModel.from_pretrained(folder, verify_weights=False) is not None
    monkeypatch.setenv("SMNER_SKIP_WEIGHTS_CHECKSUM", "1")
    assert NERModel.from_pretrained(folder) is not None


def test_folder_saved_before_checksums_loads_with_a_warning(folder: Path) -> None:
    edit_config(folder, lambda p: p.pop("weights_sha256"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert NERModel.from_pretrained(folder) is not None
    assert any(issubclass(w.category, SmnerWarning) for w in caught)
