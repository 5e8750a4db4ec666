"""Configuration: typed dataclasses for experiments and models, YAML, ``--set`` and value checks."""

from smner.config.check import ConfigError, check_fields, field_problem, from_dict, to_dict
from smner.config.experiment import (
    MAX_CONFIG_BYTES,
    DataConfig,
    ExperimentConfig,
    TrainConfig,
    apply_overrides,
    load_experiment,
    parse_yaml,
    read_config_text,
)
from smner.config.model import BIOTaggerConfig, ModelConfig, SMNERConfig

__all__ = [
    "MAX_CONFIG_BYTES",
    "BIOTaggerConfig",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "SMNERConfig",
    "TrainConfig",
    "apply_overrides",
    "check_fields",
    "field_problem",
    "from_dict",
    "load_experiment",
    "parse_yaml",
    "read_config_text",
    "to_dict",
]
