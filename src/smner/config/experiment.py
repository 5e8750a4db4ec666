"""Typed configuration: dataclasses that serialise to JSON/YAML and accept ``--set`` overrides.

A model's :class:`ModelConfig` is its only constructor argument and travels inside every saved
model folder, together with the encoder architectures, so a folder rebuilds without a network.
The checking of values against these dataclasses is :mod:`smner.config.check`'s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from smner.config.check import (
    ConfigError,
    bounds,
    check_fields,
    from_dict,
    ranged,
    suggest,
)
from smner.config.model import ModelConfig, SMNERConfig

__all__ = [
    "MAX_CONFIG_BYTES",
    "DataConfig",
    "ExperimentConfig",
    "TrainConfig",
    "apply_overrides",
    "load_experiment",
    "parse_yaml",
    "read_config_text",
]

#: Largest value of any size, count or step field: far above every real setting, far below
#: what would exhaust memory before a step is taken.
_BIG = 1_000_000
_DEVICE_RE = re.compile(r"^(auto|cpu|mps|meta|(cuda|xpu)(:\d{1,3})?)$")


def _device_problem(value: Any) -> str | None:
    if isinstance(value, str) and _DEVICE_RE.match(value):
        return None
    return "expected auto, cpu, cuda, cuda:N or mps"


def _aliases_problem(value: Any) -> str | None:
    for source, target in dict(value).items():
        if not (isinstance(source, str) and source and isinstance(target, str) and target):
            return (
                f"expected FILE_LABEL: LABEL pairs of non-empty strings, got {source!r}: {target!r}"
            )
    return None


@dataclass
class DataConfig:
    """Where the posts and images are. Relative paths are relative to the working directory."""

    train_file: str = ""
    dev_file: str = ""
    test_file: str | None = None
    image_dir: str | None = None
    #: rename entity types while reading, e.g. {"OTHER": "MISC"}
    label_aliases: dict[str, str] = field(
        default_factory=dict, metadata=bounds(check=_aliases_problem)
    )
    #: where frozen-backbone image features are cached; null disables the cache
    feature_cache_dir: str | None = "~/.cache/smner/features"
    #: folder of ``<image id>.xml`` Pascal VOC files giving each entity's box (grounded-NER
    #: data, ``smner synth``'s ``boxes/``); training then supervises the span attention
    box_dir: str | None = None
    #: share of ``train_file``'s posts held out (a fixed shuffle) to select the best epoch on,
    #: in place of ``dev_file``: for a benchmark whose dev split is the one scored
    #: (``test_file``) and must not also choose the model
    dev_holdout: float = ranged(0.0, 0.0, 0.5)

    #: largest data file read, in MiB (a FIFO or device is never read)
    max_file_mb: int = ranged(1024, 1, _BIG)

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass
class TrainConfig:
    epochs: int = ranged(10, 1, _BIG)
    batch_size: int = ranged(16, 1, _BIG)
    eval_batch_size: int = ranged(64, 1, _BIG)
    #: learning rate of the pretrained encoders
    encoder_lr: float = ranged(5e-5, 0.0, 1.0)
    #: learning rate of the layers smner adds
    head_lr: float = ranged(1e-3, 0.0, 1.0)
    warmup_ratio: float = ranged(0.1, 0.0, 1.0)
    weight_decay: float = ranged(0.01, 0.0, _BIG)
    #: AdamW's epsilon; larger values damp updates of parameters with near-zero gradients
    adam_epsilon: float = ranged(1e-8, 1e-30, 1.0)
    grad_clip: float = ranged(1.0, 0.0, _BIG)
    #: stop after this many epochs without a better dev F1 (0 = never stop early)
    patience: int = ranged(5, 0, _BIG)
    seed: int = ranged(1234, 0, 2**32 - 1)
    #: "auto" picks cuda when available, else cpu
    device: str = field(default="auto", metadata=bounds(check=_device_problem))
    #: also save DIR/last every this many optimizer steps (0 = only at the end of each epoch)
    checkpoint_every: int = ranged(0, 0, 10**9)
    #: gradient accumulation steps (the effective batch is batch_size x this)
    accumulate: int = ranged(1, 1, 10_000)
    #: batches of posts of similar sub-word length (shuffled among windows of 50 batches,
    #: then the batches shuffled): less padding, so a base-size encoder trains faster
    group_by_length: bool = False
    #: "no", "bf16" or "fp16" (GPUs)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    progress: bool = True
    #: keep DIR/last (the full training state) once the run has finished; it is needed
    #: only to extend the run with --resume and more epochs
    keep_last: bool = True

    def __post_init__(self) -> None:
        check_fields(self, "train")


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=SMNERConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


#: Largest experiment file read (a config is a few hundred bytes).
MAX_CONFIG_BYTES = 1 << 20


def _yaml_loader() -> type:
    """A safe YAML loader that refuses aliases and anchors.

    An alias repeats a node without copying its text, so a few hundred bytes of nested
    aliases expand to gigabytes ("billion laughs"); a config never needs them.
    """
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    "YAML anchors and aliases (&name, *name) are not allowed in configs",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` without anchors and aliases (see :func:`_yaml_loader`)."""
    import yaml

    return yaml.load(text, Loader=_yaml_loader())


def apply_overrides(
    data: dict[str, Any], overrides: list[str], origins: dict[str, str] | None = None
) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides; values parse as YAML (``true``, ``3``, ``[a]``).

    ``origins``, when given, receives ``{"section.key": "--set section.key=value"}``.
    """
    import yaml

    result = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) != 2 or not all(path):
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=3")
        section, name = path
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        if section not in result and section not in ("data", "model", "train"):
            sections = ["data", "model", "train"]
            hint = suggest(section, sections, "") or "expected data, model or train"
            raise ConfigError(f"--set {item}: unknown section {section}; {hint}")
        target = result.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {item!r}: {section} is not a section")
        target[name] = value
        if origins is not None:
            origins[f"{section}.{name}"] = f"--set {item}"
    return result


def read_config_text(path: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of a config file, refusing what is not a regular file or is too large."""
    from smner.fileio import InputFileError, read_input_bytes

    try:
        data = read_input_bytes(path, max_bytes, "config")
    except InputFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: invalid UTF-8 at byte {exc.start}; expected UTF-8 text"
        ) from None


def load_experiment(path: str | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML (or JSON) experiment file, apply overrides, validate every key."""
    import yaml

    data: Any = {}
    if path is not None:
        text = read_config_text(path)
        try:
            data = parse_yaml(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else path
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections data, model, train")
    origins: dict[str, str] = {}
    merged = apply_overrides(data, overrides or [], origins)
    return from_dict(ExperimentConfig, merged, "", path or "config", origins)
