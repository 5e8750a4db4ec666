"""A saved model folder's files: their names, reading and checking ``config.json``, checksums.

Below the models on purpose: the processor (:mod:`smner.processing.processor`) and the models both
read a
folder's config, and neither should need the other to do it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from smner.config.check import ConfigError, from_dict
from smner.config.model import ModelConfig
from smner.errors import SmnerError, SmnerWarning
from smner.fileio import read_input_bytes
from smner.version import __version__

#: Bumped when a saved folder's layout or meaning changes incompatibly.
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"
PROCESSOR_FILE = "processor.json"

#: Key of ``config.json`` holding the SHA-256 of the weights file.
WEIGHTS_CHECKSUM_KEY = "weights_sha256"
SKIP_CHECKSUM_ENV = "SMNER_SKIP_WEIGHTS_CHECKSUM"
#: Largest ``config.json`` read (a real one is a few tens of kB).
MAX_CONFIG_BYTES = 16 * 2**20


@contextlib.contextmanager
def write_errors(target: Path) -> Iterator[None]:
    """Turn what torch and safetensors raise when a write fails (a full disk, a quota) into
    one line; every writer in smner stages its files, so ``target`` is left as it was."""
    try:
        yield
    except (SafetensorError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SmnerError(
            f"{target}: could not be written ({first}); the previous version is left as it was"
        ) from None


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def verify_checksum(weights: Path, recorded: Any) -> None:
    if not weights.is_file():
        raise SmnerError(f"{weights}: missing; a saved model folder holds its weights here")
    if recorded is None:
        warnings.warn(
            f"{weights.parent}: no weights checksum in {CONFIG_FILE} (a folder saved by an "
            "older smner); loading it unverified",
            SmnerWarning,
            stacklevel=3,
        )
        return
    if not isinstance(recorded, str) or file_sha256(weights) != recorded.lower():
        raise SmnerError(
            f"{weights}: does not match the SHA-256 recorded in {CONFIG_FILE} (corrupted or "
            f"replaced); set {SKIP_CHECKSUM_ENV}=1 to load it anyway"
        )


def weight_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes from the safetensors header, without reading any tensor."""
    try:
        with safe_open(str(weights), framework="pt") as handle:
            return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    except FileNotFoundError:
        raise SmnerError(f"{weights}: missing; a model folder holds its weights here") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SmnerError(f"{weights}: not a valid safetensors file ({exc})") from None


def read_config(directory: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The checked :class:`ModelConfig` of a saved folder, and the whole ``config.json``."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise SmnerError(f"{directory}: not a saved smner model (no {CONFIG_FILE})")
    data = read_input_bytes(path, MAX_CONFIG_BYTES, "model config")
    try:
        payload = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmnerError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise SmnerError(f"{path}: nested too deeply to be a model config") from None
    version = payload.get("format_version") if isinstance(payload, dict) else None
    if not isinstance(version, int) or "model" not in payload:
        raise SmnerError(f"{path}: not an smner model config (no format_version/model)")
    saved_by = payload.get("smner_version", "unknown")
    if version > FORMAT_VERSION:
        raise SmnerError(
            f"{directory} was saved by smner {saved_by} in format {version}; this smner "
            f"({__version__}) reads format {FORMAT_VERSION} and older: upgrade smner"
        )
    try:
        config = from_dict(ModelConfig, payload["model"], "model")
        check_encoder_configs(config)
    except SmnerError as exc:
        raise SmnerError(f"{path} (saved by smner {saved_by}): {exc}") from None
    return config, payload


def check_encoder_configs(config: ModelConfig) -> None:
    """Refuse encoder settings no encoder can be built from, before building any."""
    text = config.text_encoder_config
    if text is not None:
        from transformers import CONFIG_MAPPING

        model_type = text.get("model_type")
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            raise ConfigError(
                f"model.text_encoder_config.model_type: {model_type!r} is not a model type "
                "this version of transformers knows"
            )
    if config.image_preprocessing is not None:
        from smner.encoders.preprocessing import ImagePreprocessing

        ImagePreprocessing.from_dict(config.image_preprocessing)


def load_config(directory: str | Path) -> ModelConfig:
    """Read and check a saved folder's config; explain clearly what is wrong if it can't."""
    return read_config(Path(directory))[0]
