"""Typed configuration: dataclasses that serialise to JSON/YAML and accept ``--set`` overrides.

A model's :class:`ModelConfig` is its only constructor argument and travels inside every saved
model folder, together with the encoder architectures, so a folder rebuilds without a network.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

from smner.errors import SmnerError

T = TypeVar("T")


class ConfigError(SmnerError):
    """A configuration value is unknown, missing or of the wrong type."""


@dataclass
class ModelConfig:
    """Every hyper-parameter of a model. Defaults are the CPU-friendly offline setting."""

    type: Literal["smner", "bio-tagger"] = "smner"
    #: entity types, without ``O``; filled from the training data when empty
    labels: list[str] = field(default_factory=list)

    # text side
    text_encoder: str = "minilm"
    word_pooling: Literal["first", "mean"] = "first"
    sentence_pooling: Literal["cls", "mean", "pooler"] = "mean"
    train_text_encoder: bool = True
    max_subwords_per_word: int = 10

    # image side
    image_encoder: str = "efficientnet-lite0"
    train_image_encoder: bool = False

    # ablations
    use_image: bool = True
    use_ib: bool = True
    use_cross_attention: bool = True

    # sizes
    hidden_size: int = 256
    max_span_width: int = 6
    width_embedding_dim: int = 50
    shape_embedding_dim: int = 50
    attention_heads: int = 4
    dropout: float = 0.2

    # local alignment (span -> region cross-attention)
    #: learned row and column embeddings added to the region tokens, so keys know where they are
    region_positions: bool = False
    #: a learned embedding of the span's relative place in the post added to its query
    query_positions: bool = False
    #: what the classifier sees of the cross-attention: "block" (the transformer block's output,
    #: query residual included) or "context" (the attended visual context alone)
    visual_context: Literal["block", "context"] = "block"
    #: subtract each image's mean region token from its region tokens, so what a span reads
    #: from a region is what sets that region apart from the rest of the image
    centre_regions: bool = False
    #: weight of the attention-supervision loss where data.box_dir gives an entity's box: the
    #: cross-entropy between the boxes' coverage of the grid and the span's attention
    attention_supervision: float = 1.0

    # losses
    ib_alpha: float = 0.1
    ib_beta: float = 0.001
    entity_weight: float = 1.0
    non_entity_weight: float = 0.5

    # BIO-tagger baselines
    tagger_head: Literal["softmax", "crf"] = "softmax"

    # Filled when the encoders are resolved, so that a saved folder rebuilds offline.
    text_encoder_config: dict[str, Any] | None = None
    image_encoder_config: dict[str, Any] | None = None
    image_preprocessing: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.max_span_width < 1:
            raise ConfigError("model.max_span_width must be at least 1")
        if self.hidden_size % self.attention_heads:
            raise ConfigError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.attention_heads ({self.attention_heads})"
            )
        if "O" in self.labels:
            raise ConfigError("model.labels lists entity types only; 'O' is implicit")

    @property
    def id_to_label(self) -> list[str]:
        """Class names by id; id 0 is ``O`` (not an entity)."""
        return ["O", *self.labels]

    @property
    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.id_to_label)}


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Validate (and gently coerce int -> float) one value against its annotation."""
    origin = get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")
    if origin is Literal:
        if value not in get_args(annotation):
            choices = ", ".join(map(repr, get_args(annotation)))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = get_args(annotation) or (Any,)
        return [_check_type(v, item_type, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept what Python reads as a number.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: Any, where: str = "config") -> T:
    """Build a config dataclass from a mapping; unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}"
        )
    values = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class DataConfig:
    """Where the posts and images are. Relative paths are relative to the working directory."""

    train_file: str = ""
    dev_file: str = ""
    test_file: str | None = None
    image_dir: str | None = None
    #: rename entity types while reading, e.g. {"OTHER": "MISC"}
    label_aliases: dict[str, str] = field(default_factory=dict)
    #: where frozen-backbone image features are cached; null disables the cache
    feature_cache_dir: str | None = "~/.cache/smner/features"
    #: folder of ``<image id>.xml`` Pascal VOC files giving each entity's box (grounded-NER
    #: data, ``smner synth``'s ``boxes/``); training then supervises the span attention
    box_dir: str | None = None


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 64
    #: learning rate of the pretrained encoders
    encoder_lr: float = 5e-5
    #: learning rate of the layers smner adds
    head_lr: float = 1e-3
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    #: AdamW's epsilon; larger values damp updates of parameters with near-zero gradients
    adam_epsilon: float = 1e-8
    grad_clip: float = 1.0
    #: stop after this many epochs without a better dev F1 (0 = never stop early)
    patience: int = 5
    seed: int = 1234
    #: "auto" picks cuda when available, else cpu
    device: str = "auto"
    #: also save DIR/last every this many optimizer steps (0 = only at the end of each epoch)
    checkpoint_every: int = 0
    #: gradient accumulation steps (the effective batch is batch_size x this)
    accumulate: int = 1
    #: "no", "bf16" or "fp16" (GPUs)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    progress: bool = True
    #: keep DIR/last (the full training state) once the run has finished; it is needed
    #: only to extend the run with --resume and more epochs
    keep_last: bool = True


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides; values parse as YAML (``true``, ``3``, ``[a]``)."""
    import yaml

    result = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        path = key.strip().split(".")
        if not sep or len(path) != 2 or not all(path):
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. train.epochs=3")
        section, name = path
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
        target = result.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"--set {item!r}: {section} is not a section")
        target[name] = value
    return result


def load_experiment(path: str | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML (or JSON) experiment file, apply overrides, validate every key."""
    import yaml

    data: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: file not found") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else path
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections data, model, train")
    return from_dict(ExperimentConfig, apply_overrides(data, overrides or []), path or "config")
