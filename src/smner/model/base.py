"""The interface every smner model implements, and saving/loading model folders.

A folder holds ``config.json`` (the :class:`ModelConfig`, labels included, and the smner
version), ``model.safetensors`` and ``tokenizer/``. Loading rebuilds the architecture from the
config alone and needs no network.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from smner import __version__
from smner.config import ConfigError, ModelConfig, from_dict, to_dict
from smner.data.batching import Batch
from smner.data.types import Entity
from smner.encoders.image import ImageEncoder, build_image_encoder
from smner.encoders.text import TextEncoder, text_config_from_dict
from smner.errors import SmnerError
from smner.fileio import atomic_path, atomic_write_text, make_staging_dir, replace_directory

#: Bumped when a saved folder's layout or meaning changes incompatibly.
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_DIR = "tokenizer"


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, S, C] span logits (or [B, T, C] tag logits)
    loss: torch.Tensor | None = None  # only when labels are given
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # its parts
    attention: torch.Tensor | None = None  # [B, S, N] span -> visual-token weights
    grid: tuple[int, int] | None = None  # (h, w) of the region tokens


@dataclass
class PredictedEntity:
    entity: Entity
    score: float
    #: attention over the image grid ``[h, w]``; None without an image or cross-attention
    attention: np.ndarray | None = None
    #: attention on the global visual token
    global_attention: float | None = None


class NERModel(nn.Module):
    """Base class: ``forward(batch, labels=None)``, ``decode``, save and load."""

    registry: ClassVar[dict[str, type[NERModel]]] = {}
    model_type: ClassVar[str]

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "model_type" in cls.__dict__:
            NERModel.registry[cls.model_type] = cls

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> ModelOutput:
        raise NotImplementedError

    def decode(self, batch: Batch, output: ModelOutput) -> list[list[PredictedEntity]]:
        raise NotImplementedError

    def labels_of(self, batch: Batch) -> torch.Tensor | None:
        """The gold labels this model trains on, taken from a collated batch."""
        return batch.span_labels

    @torch.no_grad()
    def predict(self, batch: Batch) -> list[list[PredictedEntity]]:
        """Entities per post, in eval mode (deterministic), restoring the previous mode."""
        was_training = self.training
        self.eval()
        try:
            return self.decode(batch, self(batch))
        finally:
            self.train(was_training)

    def _attach_encoders(
        self, text_encoder: TextEncoder | None, image_encoder: ImageEncoder | None
    ) -> None:
        """Set ``self.text`` (and ``self.image`` when the config uses images).

        Given encoders are the pretrained ones of :func:`build_model`; without them the
        architectures saved in the config are rebuilt, for :meth:`from_pretrained` to fill.
        """
        config = self.config
        if config.text_encoder_config is None:
            raise SmnerError("model config has no text_encoder_config: build it with build_model")
        self.text = text_encoder or TextEncoder(
            text_config_from_dict(config.text_encoder_config),
            config.word_pooling,
            config.sentence_pooling,
        )
        for p in self.text.backbone.parameters():
            p.requires_grad_(p.requires_grad and config.train_text_encoder)
        if config.use_image:
            self.image = image_encoder or build_image_encoder(
                config.image_encoder,
                pretrained=False,
                encoder_config=config.image_encoder_config,
                preprocessing=config.image_preprocessing,
            )
            self.image.set_trainable(config.train_image_encoder)

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that came pretrained (they get their own learning rate)."""
        encoders = [self.text, getattr(self, "image", None)]
        return [p for e in encoders if e is not None for p in e.parameters() if p.requires_grad]

    # --- saving and loading ---------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, tokenizer: Any | None = None) -> None:
        """Write the folder atomically: a crash mid-write leaves the previous folder intact."""
        target = Path(directory)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = make_staging_dir(target.parent, f".{target.name}.")
        try:
            payload = {
                "smner_version": __version__,
                "format_version": FORMAT_VERSION,
                "model": to_dict(self.config),
            }
            atomic_write_text(staging / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")
            # Through atomic_path: safetensors itself writes 0600 whatever the umask says.
            with atomic_path(staging / WEIGHTS_FILE) as tmp:
                save_model(self, str(tmp), metadata={"format": "pt"})
            if tokenizer is not None:
                tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
            replace_directory(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str = "cpu") -> NERModel:
        config = load_config(directory)
        model_cls = NERModel.registry.get(config.type)
        if model_cls is None:
            raise SmnerError(f"{directory}: unknown model type {config.type!r}")
        model = model_cls(config)
        missing, unexpected = load_model(
            model, str(Path(directory) / WEIGHTS_FILE), strict=False, device=device
        )
        if missing or unexpected:
            raise SmnerError(
                f"{directory}: weights do not match the architecture in {CONFIG_FILE} "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
            )
        return model.to(device).eval()


def load_config(directory: str | Path) -> ModelConfig:
    """Read and check a saved folder's config; explain clearly what is wrong if it can't."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise SmnerError(f"{directory}: not a saved smner model (no {CONFIG_FILE})")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmnerError(f"{path}: not valid JSON ({exc})") from None
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
        return from_dict(ModelConfig, payload["model"], "model")
    except ConfigError as exc:
        raise SmnerError(f"{path} (saved by smner {saved_by}): {exc}") from None
