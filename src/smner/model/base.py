"""The interface every smner model implements, and saving/loading model folders.

A folder holds ``config.json`` (the :class:`ModelConfig`, labels included, and the smner
version), ``model.safetensors``, and the model's :class:`~smner.processing.processor.Processor`
(``processor.json`` and ``tokenizer/``). Loading rebuilds the architecture from the config
alone and needs no network; :mod:`smner.saved.folder` reads and checks the files.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from smner.config.check import to_dict
from smner.config.model import ModelConfig
from smner.data.types import Entity
from smner.encoders.image import build_image_encoder
from smner.encoders.image_base import ImageEncoder
from smner.encoders.text import TextEncoder, text_config_from_dict
from smner.errors import SmnerError
from smner.fileio import atomic_path, atomic_write_text, make_staging_dir, replace_directory
from smner.model.grounding import GroundingOutput
from smner.processing.batching import Batch
from smner.processing.processor import Processor
from smner.saved.folder import (
    CONFIG_FILE,
    FORMAT_VERSION,
    SKIP_CHECKSUM_ENV,
    WEIGHTS_CHECKSUM_KEY,
    WEIGHTS_FILE,
    file_sha256,
    read_config,
    verify_checksum,
    weight_shapes,
    write_errors,
)
from smner.version import __version__


@dataclass
class ModelOutput:
    logits: torch.Tensor  # [B, S, C] span logits (or [B, T, C] tag logits)
    loss: torch.Tensor | None = None  # only when labels are given
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # its parts
    #: [B, S, N] span -> visual-token weights: no-image, global, then the regions of image
    #: slot 0, slot 1, ... (``N = 2 + M * h * w``)
    attention: torch.Tensor | None = None
    grid: tuple[int, int] | None = None  # (h, w) of one image's region tokens
    #: per span: in-image logit and box (models with a grounding head, posts with images)
    grounding: GroundingOutput | None = None
    #: what the competitive pass still has to read, from a traced graph that leaves the pass
    #: to PyTorch (``SMNER.compete_after`` runs it); None once it has run, or without one
    competition: CompetitionInputs | None = None


@dataclass
class CompetitionInputs:
    """The first pass's tensors the competitive pass reads besides its logits and attention
    (:mod:`smner.model.competition`). A graph cannot hold that pass (a decode picks its
    members), so an exported graph hands these out and the backend runs it in PyTorch."""

    spans: torch.Tensor  # [B, S, d] span vectors
    tokens: torch.Tensor  # [B, N, d] visual tokens
    ignore: torch.Tensor  # [B, N] keys each post may not attend to
    gate: torch.Tensor | None = None  # [B] the gated bottleneck's share of the image path


@dataclass
class PredictedEntity:
    entity: Entity
    score: float
    #: attention over the image grid ``[h, w]``; None without an image or cross-attention
    attention: np.ndarray | None = None
    #: attention on the global visual token
    global_attention: float | None = None
    #: probability that the entity is in the image (models with a grounding head)
    in_image: float | None = None
    #: its box ``(x0, y0, x1, y1)`` in [0, 1] coordinates of the crop the model saw, when
    #: ``in_image`` reaches the model's threshold; values past 0 or 1 reach outside the crop
    box_in_crop: tuple[float, float, float, float] | None = None
    #: the image slot the entity is grounded in: the one whose regions got the most of its
    #: attention (``attention`` and ``box_in_crop`` are over that image); None without one
    image_index: int | None = None


class NERModel(nn.Module):
    """Base class: ``forward(batch, labels=None)``, ``decode``, save and load."""

    registry: ClassVar[dict[str, type[NERModel]]] = {}
    model_type: ClassVar[str]

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        #: the reduced precision :meth:`predict` runs the forward in (autocast), or None for
        #: the weights' own (``quantize="bf16"`` sets bfloat16: see :mod:`smner.model.quantize`)
        self.autocast_dtype: torch.dtype | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "model_type" in cls.__dict__:
            NERModel.registry[cls.model_type] = cls

    @property
    def explains(self) -> bool:
        """Whether predictions carry span-to-region attention (and training can supervise it)."""
        return False

    @property
    def image_encoder(self) -> ImageEncoder | None:
        """The image backbone (with its preprocessing), or None for a text-only model."""
        return self.image if self.config.use_image else None

    @property
    def attention_grid(self) -> tuple[int, int] | None:
        """``(h, w)`` of the region grid predictions' attention covers; None when they carry
        none (text-only models, models without cross-attention, the BIO taggers)."""
        encoder = self.image_encoder
        if not self.explains or encoder is None:
            return None
        height, width = encoder.output_grid()
        return int(height), int(width)

    @property
    def grounds(self) -> bool:
        """Whether predictions say if each entity is in the image, and where (a box)."""
        return False

    def detached_heads(self) -> list[nn.Module]:
        """Heads trained on detached inputs: their losses reach only their own weights, so
        training clips their gradients apart (their norm must not shrink everyone else's)."""
        return []

    def visual_features(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int] | None]:
        """Pooled ``[B, Dv]`` and region ``[B, K, Dv]`` features and the region grid, zero
        where there is no image: the one place that picks a batch's visual input (cached
        features, or pixels through the backbone) for every model type."""
        size, device = batch.size, batch.input_ids.device
        if batch.image_slots > 1:
            raise SmnerError(
                f"a batch with {batch.image_slots} images a post: this model (or backend) takes "
                "one image per post"
            )
        if batch.image_pooled is not None and batch.image_regions is not None:
            pooled, regions = batch.image_pooled, batch.image_regions
            grid = self.image.output_grid()
        elif batch.pixel_values is not None:
            features = self.image(batch.pixel_values)
            pooled, regions, grid = features.pooled, features.regions, features.grid
        else:
            dim = self.image.output_dim
            return (
                torch.zeros(size, dim, device=device),
                torch.zeros(size, 0, dim, device=device),
                None,
            )
        if not bool(batch.has_image.all()):
            keep = batch.has_image.view(-1, 1)
            # where(), not multiplication: whatever sits in a masked slot (even NaN) cannot leak.
            pooled = torch.where(keep, pooled, torch.zeros_like(pooled))
            regions = torch.where(keep.unsqueeze(-1), regions, torch.zeros_like(regions))
        return pooled, regions, grid

    def visual_slots(
        self, batch: Batch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int] | None]:
        """Pooled ``[B, M, Dv]`` and region ``[B, M, K, Dv]`` features of each image slot,
        the slots that hold an image ``[B, M]``, and the region grid; zero in every absent
        slot. A one-image batch goes through :meth:`visual_features` (``M = 1``)."""
        if batch.image_mask is None:
            pooled, regions, grid = self.visual_features(batch)
            return pooled.unsqueeze(1), regions.unsqueeze(1), batch.has_image.unsqueeze(1), grid
        mask = batch.image_mask
        size, slots = mask.shape
        if batch.image_pooled is not None and batch.image_regions is not None:
            pooled, regions = batch.image_pooled, batch.image_regions
            grid = self.image.output_grid()
        elif batch.pixel_values is not None:
            # only the slots that hold an image go through the backbone
            features = self.image(batch.pixel_values[mask])
            grid = features.grid
            pooled = features.pooled.new_zeros((size, slots, *features.pooled.shape[1:]))
            regions = features.regions.new_zeros((size, slots, *features.regions.shape[1:]))
            pooled[mask], regions[mask] = features.pooled, features.regions
        else:
            dim, device = self.image.output_dim, batch.input_ids.device
            return (
                torch.zeros(size, slots, dim, device=device),
                torch.zeros(size, slots, 0, dim, device=device),
                mask,
                None,
            )
        # where(), not multiplication: whatever sits in a masked slot (even NaN) cannot leak.
        pooled = torch.where(mask.unsqueeze(-1), pooled, torch.zeros_like(pooled))
        regions = torch.where(mask[:, :, None, None], regions, torch.zeros_like(regions))
        return pooled, regions, mask, grid

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
            dtype = self.autocast_dtype
            device = batch.input_ids.device.type
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                output = self(batch)
            return self.decode(batch, output)
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
            if config.image_preprocessing is None:  # the processor reads it from the config
                self.config = replace(
                    config, image_preprocessing=self.image.preprocessing.to_dict()
                )

    def pretrained_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters that came pretrained (they get their own learning rate)."""
        encoders = [self.text, self.image_encoder]
        return [p for e in encoders if e is not None for p in e.parameters() if p.requires_grad]

    # --- saving and loading ---------------------------------------------------------------

    def save_pretrained(
        self,
        directory: str | Path,
        tokenizer: Any | None = None,
        card_facts: dict[str, Any] | None = None,
        *,
        processor: Processor | None = None,
    ) -> None:
        """Write the folder atomically: a crash mid-write leaves the previous folder intact.

        ``processor`` (or just the ``tokenizer``, from which this model's processor is made;
        a :class:`Processor` is taken there too) is written beside the weights, so that the
        folder prepares posts exactly as in training.

        The folder gets a model card, ``README.md`` (see :mod:`smner.saved.card`); ``card_facts``
        are the facts of the training run that produced the weights, when there is one.

        ``config.json`` records the SHA-256 of ``model.safetensors``, which loading verifies.
        """
        target = Path(directory)
        if processor is None and tokenizer is not None:
            processor = (
                tokenizer
                if isinstance(tokenizer, Processor)
                else Processor.for_model(self.config, tokenizer)
            )
        if processor is not None:
            processor.check_model(self.config, target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = make_staging_dir(target.parent, f".{target.name}.")
        with write_errors(target):
            self._write_folder(staging, target, processor, card_facts)

    def _write_folder(
        self,
        staging: Path,
        target: Path,
        processor: Processor | None,
        card_facts: dict[str, Any] | None,
    ) -> None:
        try:
            # Through atomic_path: safetensors itself writes 0600 whatever the umask says.
            with atomic_path(staging / WEIGHTS_FILE) as tmp:
                save_model(self, str(tmp), metadata={"format": "pt"})
            payload = {
                "smner_version": __version__,
                "format_version": FORMAT_VERSION,
                WEIGHTS_CHECKSUM_KEY: file_sha256(staging / WEIGHTS_FILE),
                "model": to_dict(self.config),
            }
            atomic_write_text(staging / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")
            if processor is not None:
                processor.save_pretrained(staging)
            from smner.saved.card import write_model_card
            from smner.saved.card_render import card_name

            write_model_card(staging, card_facts, name=card_name(target))
            replace_directory(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str = "cpu", verify_weights: bool | None = None
    ) -> NERModel:
        """Load a saved folder, checking it before anything large is allocated.

        The config is validated (every size bounded), the weights are checked against the
        SHA-256 recorded in ``config.json`` (``verify_weights=False``, or the environment
        variable ``SMNER_SKIP_WEIGHTS_CHECKSUM=1``, skips that, e.g. for a folder whose
        weights were edited on purpose), and every weight's shape is compared with the
        architecture the config describes, built first on the ``meta`` device (no memory).
        """
        directory = Path(directory)
        config, payload = read_config(directory)
        model_cls = NERModel.registry.get(config.type)
        if model_cls is None:
            raise SmnerError(f"{directory}: unknown model type {config.type!r}")
        weights = directory / WEIGHTS_FILE
        if verify_weights is None:
            verify_weights = os.environ.get(SKIP_CHECKSUM_ENV, "") in ("", "0")
        if verify_weights:
            verify_checksum(weights, payload.get(WEIGHTS_CHECKSUM_KEY))
        shapes = weight_shapes(weights)
        skeleton = _build(model_cls, config, directory, meta=True)
        expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
        wrong = [(k, shapes[k], w) for k, w in expected.items() if shapes.get(k, w) != w]
        if wrong:
            name, found, want = wrong[0]
            more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
            raise SmnerError(
                f"{weights}: weight {name} has shape {list(found)} but {CONFIG_FILE} describes "
                f"{list(want)}{more}; the folder's files do not belong together"
            )
        model = _build(model_cls, config, directory, meta=False)
        try:
            missing, unexpected = load_model(model, str(weights), strict=False, device=device)
        except (SafetensorError, RuntimeError, OSError, ValueError) as exc:
            raise SmnerError(f"{weights}: cannot load the weights ({exc})") from None
        if missing or unexpected:
            raise SmnerError(
                f"{directory}: weights do not match the architecture in {CONFIG_FILE} "
                f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
            )
        return model.to(device).eval()


def _build(model_cls: type[NERModel], config: ModelConfig, directory: Path, meta: bool) -> NERModel:
    try:
        if meta:
            with torch.device("meta"):
                return model_cls(config)
        return model_cls(config)
    except SmnerError as exc:
        raise SmnerError(f"{directory / CONFIG_FILE}: {exc}") from None
    except Exception as exc:  # what transformers or torch raise for an impossible architecture
        raise SmnerError(
            f"{directory / CONFIG_FILE}: the architecture it describes cannot be built "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
