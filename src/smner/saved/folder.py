"""A saved model folder's files: their names, reading and checking ``config.json``, checksums.

Below the models on purpose: the processor (:mod:`smner.processing.processor`) and the models both
read a
folder's config, and neither should need the other to do it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open

from smner.config.check import ConfigError, from_dict
from smner.config.model import ADDED_AFTER_RELEASE, ModelConfig
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
    weights = directory / WEIGHTS_FILE
    shapes = weight_shapes(weights) if weights.is_file() else None
    try:
        model = payload["model"]
        if isinstance(model, dict) and model.get("type", "smner") == "smner":
            model = {**ADDED_AFTER_RELEASE, **model}
        config = from_dict(ModelConfig, model, "model")
        check_encoder_configs(config, shapes)
    except SmnerError as exc:
        raise SmnerError(f"{path} (saved by smner {saved_by}): {exc}") from None
    return config, payload


def check_encoder_configs(
    config: ModelConfig, shapes: Mapping[str, tuple[int, ...]] | None = None
) -> None:
    """Refuse encoder settings no encoder can be built from, before building any: an unknown
    model type, layer, head, width or vocabulary counts out of bounds, and, given the
    weights file's tensor shapes, counts that its tensors contradict."""
    from smner.encoders.hf_config import check_encoder_sizes

    text = config.text_encoder_config
    if text is not None:
        from transformers import CONFIG_MAPPING

        model_type = text.get("model_type")
        if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING:
            raise ConfigError(
                f"model.text_encoder_config.model_type: {model_type!r} is not a model type "
                "this version of transformers knows"
            )
        check_encoder_sizes(text, "model.text_encoder_config")
        if shapes is not None:
            _against_weights(text, shapes, "text.backbone.", "model.text_encoder_config")
    image = config.image_encoder_config
    if isinstance(image, Mapping):
        check_encoder_sizes(image, "model.image_encoder_config")
        if shapes is not None:
            tower = image.get("vision_config")
            tower = tower if isinstance(tower, Mapping) else image
            _against_weights(tower, shapes, "image.backbone.", "model.image_encoder_config")
    if config.image_preprocessing is not None:
        from smner.encoders.preprocessing import ImagePreprocessing

        ImagePreprocessing.from_dict(config.image_preprocessing)


#: A transformer layer's index in a weight name (``encoder.layer.3.``, ``encoder.layers.3.``,
#: ``encoder.block.3.``).
_LAYER = re.compile(r"(?:^|\.)encoder\.(?:layer|layers|block)\.(\d+)\.")
_EMBEDDING = ("word_embeddings.weight", "embed_tokens.weight", "shared.weight")


def _against_weights(
    values: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], prefix: str, where: str
) -> None:
    """Compare an encoder config's layers, width, heads and vocabulary with the weights."""
    names = [name for name in shapes if name.startswith(prefix)]
    if not names:
        return
    layers = {int(m.group(1)) for n in names if (m := _LAYER.search(n[len(prefix) - 1 :]))}
    key = next((k for k in ("num_hidden_layers", "num_layers") if k in values), None)
    if layers and key is not None and values[key] != max(layers) + 1:
        raise ConfigError(
            f"{where}.{key}: {values[key]} layers, but the weights file holds "
            f"{max(layers) + 1}; the folder's files do not belong together"
        )
    embedding = next((n for n in names if n.endswith(_EMBEDDING)), None)
    if embedding is None or len(shapes[embedding]) != 2:
        return
    rows, width = shapes[embedding]
    if "vocab_size" in values and values["vocab_size"] != rows:
        raise ConfigError(
            f"{where}.vocab_size: {values['vocab_size']}, but the weights file's embedding "
            f"{embedding} has {rows} rows; the folder's files do not belong together"
        )
    wide_key = next(
        (k for k in ("embedding_size", "hidden_size", "d_model", "dim") if values.get(k)), None
    )
    if wide_key is not None and values[wide_key] != width:
        raise ConfigError(
            f"{where}.{wide_key}: {values[wide_key]}, but the weights file's embedding "
            f"{embedding} is {width} wide; the folder's files do not belong together"
        )
    heads = values.get("num_attention_heads")
    hidden = values.get("hidden_size")
    if isinstance(heads, int) and isinstance(hidden, int) and heads > hidden:
        raise ConfigError(
            f"{where}.num_attention_heads: {heads} heads for a hidden size of {hidden}; "
            "expected at most one head per unit"
        )


def load_config(directory: str | Path) -> ModelConfig:
    """Read and check a saved folder's config; explain clearly what is wrong if it can't."""
    return read_config(Path(directory))[0]
