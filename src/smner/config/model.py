"""A config per model type: what every model shares, and what SMNER and the BIO tagger add.

``ModelConfig(...)`` (and a ``model:`` section of a YAML file, and a saved ``config.json``)
gives the config of the type it names: :class:`SMNERConfig` for ``type: smner`` (the default),
:class:`BIOTaggerConfig` for ``type: bio-tagger``. Files written by smner 0.1.0 held one flat
config with every key; reading one, the keys of the other model type are dropped, with a
warning where a value differs from its default (it never had an effect).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from smner.config.check import ConfigError, bounds, check_fields, ranged
from smner.errors import SmnerWarning

_BIG = 1_000_000


def _non_empty(value: Any) -> str | None:
    return None if isinstance(value, str) and value.strip() else "expected a non-empty string"


def _labels_problem(value: Any) -> str | None:
    labels = list(value)
    if any(not isinstance(v, str) or not v.strip() or v != v.strip() for v in labels):
        return "expected entity types as non-empty strings without surrounding spaces"
    duplicates = sorted({v for v in labels if labels.count(v) > 1})
    if duplicates:
        return f"duplicate entity type(s) {', '.join(duplicates)}: each type must appear once"
    if len(labels) > 10_000:
        return f"{len(labels)} entity types; expected at most 10000"
    return None


@dataclass
class ModelConfig:
    """What every model type shares: labels, encoders, the image switch, dropout, spans.

    ``ModelConfig(type=..., ...)`` builds the config class of that type (see the module
    docstring); the defaults are the CPU-friendly offline setting.
    """

    #: config classes by model type, filled by the subclasses
    variants: ClassVar[dict[str, Any]] = {}

    type: str = "smner"
    #: entity types, without ``O``; filled from the training data when empty
    labels: list[str] = field(default_factory=list, metadata=bounds(check=_labels_problem))

    # text side
    text_encoder: str = field(default="minilm", metadata=bounds(check=_non_empty))
    word_pooling: Literal["first", "mean"] = "first"
    sentence_pooling: Literal["cls", "mean", "pooler"] = "mean"
    train_text_encoder: bool = True
    max_subwords_per_word: int = ranged(10, 1, 512)

    # image side
    image_encoder: str = field(default="efficientnet-lite0", metadata=bounds(check=_non_empty))
    train_image_encoder: bool = False
    use_image: bool = True
    #: the image's region grid: the backbone's last map (7 x 7 for EfficientNet-Lite0), or
    #: ``fine``, its stride-16 map joined with the last (14 x 14: finer boxes and heatmaps,
    #: four times the cells to attend over; EfficientNet-Lite only)
    image_regions: Literal["last", "fine"] = "last"

    #: the longest span (in words) considered; the processor enumerates spans up to it
    max_span_width: int = ranged(6, 1, 512)
    dropout: float = ranged(0.2, 0.0, 1.0, high_open=True)

    # Filled when the encoders are resolved, so that a saved folder rebuilds offline.
    text_encoder_config: dict[str, Any] | None = None
    image_encoder_config: dict[str, Any] | None = None
    image_preprocessing: dict[str, Any] | None = None

    def __new__(cls, *args: Any, **kwargs: Any) -> ModelConfig:
        if cls is ModelConfig:
            name = kwargs.get("type", "smner")
            if name not in ModelConfig.variants:
                choices = ", ".join(map(repr, ModelConfig.variants))
                raise ConfigError(f"model.type: {name!r} is not one of {choices}")
            cls = ModelConfig.variants[name]
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        default = cls.__dict__.get("type")
        if isinstance(default, str):
            ModelConfig.variants[default] = cls

    def __post_init__(self) -> None:
        if "O" in self.labels:
            raise ConfigError("model.labels lists entity types only; 'O' is implicit")
        check_fields(self, "model")

    @property
    def id_to_label(self) -> list[str]:
        """Class names by id; id 0 is ``O`` (not an entity)."""
        return ["O", *self.labels]

    @property
    def label_to_id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.id_to_label)}

    @property
    def label_scheme(self) -> Literal["spans", "bio"]:
        """How gold entities become training targets: a label per span, or a BIO tag per word."""
        return "spans"

    @property
    def uses_ib(self) -> bool:
        """Whether the model aligns text and image globally (the information bottleneck)."""
        return False

    @property
    def uses_cross_attention(self) -> bool:
        """Whether spans attend to image regions (span-to-region cross-attention)."""
        return False

    @classmethod
    def variant_for(
        cls, data: dict[str, Any], error: Callable[[str, str], ConfigError], prefix: str
    ) -> tuple[type[ModelConfig], dict[str, Any]]:
        """The config class a mapping names by its ``type``, and the mapping without the keys
        of other model types (a 0.1.0 file holds them all; a changed one is warned about)."""
        name = data.get("type", "smner")
        chosen = ModelConfig.variants.get(name) if isinstance(name, str) else None
        if chosen is None:
            choices = ", ".join(map(repr, ModelConfig.variants))
            raise error(f"{prefix}.type" if prefix else "type", f"{name!r} is not one of {choices}")
        own = {f.name for f in dataclasses.fields(chosen)}
        kept, ignored = {}, []
        for key, value in data.items():
            if key in own:
                kept[key] = value
                continue
            default = _default_elsewhere(key)
            if default is _UNKNOWN:
                kept[key] = value  # an unknown key: from_dict names it, with a suggestion
            elif value != default:
                ignored.append(f"{prefix}.{key}" if prefix else key)
        if ignored:
            warnings.warn(
                f"{', '.join(ignored)}: not a setting of a {name} model (it has no effect); "
                "ignored",
                SmnerWarning,
                stacklevel=4,
            )
        return chosen, kept


_UNKNOWN = object()


def _default_elsewhere(key: str) -> Any:
    """The default of ``key`` in whichever model type's config has it, else ``_UNKNOWN``."""
    for variant in ModelConfig.variants.values():
        for f in dataclasses.fields(variant):
            if f.name == key:
                if f.default is not dataclasses.MISSING:
                    return f.default
                if f.default_factory is not dataclasses.MISSING:
                    return f.default_factory()
    return _UNKNOWN


@dataclass
class SMNERConfig(ModelConfig):
    """SMNER: spans, the global bottleneck, span-to-region attention, an optional box head."""

    type: Literal["smner"] = "smner"

    # ablations
    use_ib: bool = True
    use_cross_attention: bool = True

    #: the most images a post brings (a post's further images are refused): each image's
    #: regions become visual tokens tagged with a learned image-slot embedding, absent slots
    #: are masked out of the attention, and the bottleneck sees a masked pool over the images.
    #: 1 adds no parameters (a folder saved before this setting loads as 1)
    max_images: int = ranged(4, 1, 64)
    #: initial scale (std) of the image-slot tags of the images after a post's first, which
    #: are taken relative to the first image's (so the first image's keys get none and a post
    #: of one image reads as in a one-image model, ever): large enough to compete with the
    #: content of the keys from the first step, as ``position_scale`` is. 0: every slot's tag
    #: learned from zero, the first image's too (how folders saved before this setting work)
    image_slot_scale: float = ranged(1.0, 0.0, 100.0)

    # sizes
    hidden_size: int = ranged(256, 1, 16384)
    width_embedding_dim: int = ranged(50, 1, 16384)
    shape_embedding_dim: int = ranged(50, 1, 16384)
    attention_heads: int = ranged(4, 1, 1024)

    #: transformer layers over word vector + shape + position before spans are built (0: none),
    #: so that the case pattern and order of the neighbours reach every word
    word_context_layers: int = ranged(0, 0, 12)

    # local alignment (span -> region cross-attention)
    #: learned row and column embeddings added to the region tokens, so keys know where they are
    region_positions: bool = True
    #: a learned embedding of the span's relative place in the post added to its query
    query_positions: bool = True
    #: initial scale (std) of those position embeddings: large enough to compete with the
    #: content of queries and keys from the first step (at 0.02 they never took effect)
    position_scale: float = ranged(1.0, 0.0, 100.0)
    #: what the classifier sees of the cross-attention: "block" (the transformer block's output,
    #: query residual included) or "context" (the attended visual context alone)
    visual_context: Literal["block", "context"] = "context"
    #: weight of the attention-supervision loss where data.box_dir gives an entity's box: the
    #: cross-entropy between the boxes' coverage of the grid and the span's attention
    attention_supervision: float = ranged(1.0, 0.0, _BIG)
    #: weakly supervised localisation, learned from entity types alone (no boxes): weight of
    #: a multiple-instance loss that teaches a per-region type classifier which types each
    #: image shows (those its post names; 0: off)
    region_types: float = ranged(0.0, 0.0, _BIG)
    #: weight of the loss that pulls each gold entity's span attention toward the regions
    #: that classifier finds its type in, weighed by how sure it is (0: off; needs
    #: region_types). Entities with a box in data.box_dir learn from the box instead.
    region_attention: float = ranged(0.0, 0.0, _BIG)
    #: the share of that loss's gradient that reaches the text encoder and the span vectors
    #: through the queries (1: all of it; 0: none, so it trains the alignment's projections and
    #: the region side only). Its gradient is ten times the entity types' on the shared text
    #: encoder, so at 1 the words hardly learn what they tell of an entity's type
    #: (docs/BENCHMARKS.md, "The bottleneck where it should help")
    localisation_text_gradient: float = ranged(1.0, 0.0, 1.0)
    #: the classifier's evidence for an entity's type, averaged over each cell's N x N
    #: neighbourhood (odd; 1: off) before it rewards the attention: a cell's features see past
    #: the cell, so a small cue's edge cells score as high as the cells it fills, and the
    #: average peaks in its middle instead (smner.model.alignment.EvidenceFocus)
    region_evidence_pooling: int = ranged(1, 1, 15)
    #: that evidence relative to its best cell, raised to this power: above 1 the reward
    #: gathers on the cells nearest the evidence's peak (1: as it is)
    region_evidence_sharpness: float = ranged(1.0, 0.0, 100.0)
    #: how the attention learns from that evidence: "reward" (the share it puts on the
    #: evidence, relative to the best cell) or "imitate" (a cross-entropy to the evidence
    #: normalised to a distribution, as box supervision imitates a box's coverage)
    region_attention_target: Literal["reward", "imitate"] = "reward"

    #: the heatmaps predictions carry (and ``smner evaluate --boxes`` scores): "attention"
    #: (each span's attention over the regions) or "evidence" (that attention raised to
    #: ``heatmap_attention_power``, times the region classifier's evidence for the span's
    #: predicted type averaged over 3 x 3 neighbourhoods; needs region_types). The attention
    #: picks which cue a name looks at; on small cues its peak often lands beside the cue,
    #: and the evidence moves it onto the cue's middle (smner.model.heatmaps.evidence_heatmaps).
    #: Entity types do not change
    heatmaps: Literal["attention", "evidence"] = "attention"
    #: the attention's power in "evidence" heatmaps: near 0 it only picks the cue, at 1 it
    #: weighs as much as the evidence
    heatmap_attention_power: float = ranged(0.1, 0.0, 10.0)

    #: modality dropout: the share of training posts read, each step, as posts without a
    #: picture, so that the words learn to tell types on their own and a picture that
    #: contradicts them does not simply win (0: off; prediction never drops)
    image_dropout: float = ranged(0.0, 0.0, 1.0, high_open=True)
    #: weight of the cross-entropy of every post's text-side reading (its spans classified
    #: as if it had no picture) beside the multimodal one, so that the words learn to tell
    #: types even where the picture already does (0: off)
    text_side_loss: float = ranged(0.0, 0.0, _BIG)
    #: entities compete for the picture: a second span-to-region pass over the entities of
    #: each post that names two or more, where each visual token's weight is shared out among
    #: them by a softmax over the entities at this temperature, so that two names cannot
    #: settle on one cue (0: off). Training adds the pass's cross-entropy over the gold
    #: entities; prediction reads the entities' types (and heatmaps) from it. See
    #: smner.model.competition
    entity_competition: float = ranged(0.0, 0.0, 100.0)

    #: at prediction, only the best N spans of a post by their text-side score (what the
    #: model predicts for them without the picture) go through the span-to-region attention,
    #: the rest are non-entities; posts without an image are not changed (0: every span; only
    #: with visual_context "context"; training never prunes). See smner.model.span_pruning
    span_pruning: int = ranged(0, 0, 100_000)

    # grounding (which entities are in the image, and their boxes)
    #: a grounding head on the span attention, trained on data.box_dir's boxes: each predicted
    #: entity gets a probability of being in the image and a box (needs cross-attention)
    grounding: bool = False
    #: weight of the grounding loss (presence cross-entropy + 5 L1 + 2 generalised IoU)
    grounding_weight: float = ranged(1.0, 0.0, _BIG)
    #: an entity is said to be in the image when that probability is at least this
    grounding_threshold: float = ranged(0.5, 0.0, 1.0)

    # losses
    ib_alpha: float = ranged(0.1, 0.0, _BIG)
    ib_beta: float = ranged(0.001, 0.0, _BIG)
    #: the gated bottleneck: the image path (the span-to-region context, or the global image
    #: vector without cross-attention) is scaled per post by a gate driven by the bottleneck's
    #: text-image agreement (its mutual-information critic's score of the post's own pair),
    #: and the rest of the way filled with the no-image token, so that a picture that does not
    #: go with its words is read as no picture. False: the bottleneck as the paper specifies it
    #: (configs/paper.yaml); needs use_ib and use_image
    ib_gate: bool = False
    entity_weight: float = ranged(1.0, 0.0, _BIG)
    non_entity_weight: float = ranged(0.5, 0.0, _BIG)
    #: share of each span's target spread over the other classes (0: plain cross-entropy)
    label_smoothing: float = ranged(0.0, 0.0, 1.0, high_open=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grounding and not (self.use_image and self.use_cross_attention):
            raise ConfigError(
                "model.grounding needs span-to-region attention: use_image and "
                "use_cross_attention (the ablations without it do not ground)"
            )
        if self.grounding and self.image_dropout:
            raise ConfigError(
                "model.image_dropout with model.grounding: the box head learns from the "
                "attention of posts that show their picture; set image_dropout to 0"
            )
        if self.region_attention and not self.region_types:
            raise ConfigError(
                "model.region_attention needs model.region_types: the attention learns from "
                "the region classifier's maps"
            )
        if self.heatmaps == "evidence" and not (self.region_types and self.uses_cross_attention):
            raise ConfigError(
                "model.heatmaps: evidence reads the region classifier of model.region_types "
                "beside the span-to-region attention: it needs region_types, use_image and "
                "use_cross_attention"
            )
        if self.region_evidence_pooling % 2 == 0:
            raise ConfigError(
                f"model.region_evidence_pooling must be odd (a cell's neighbourhood centred on "
                f"it), not {self.region_evidence_pooling}"
            )
        if self.ib_gate and not (self.use_image and self.use_ib):
            raise ConfigError(
                "model.ib_gate is driven by the bottleneck's critic: it needs use_image and use_ib"
            )
        if self.hidden_size % self.attention_heads:
            raise ConfigError(
                f"model.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.attention_heads ({self.attention_heads})"
            )

    @property
    def uses_ib(self) -> bool:
        return self.use_image and self.use_ib

    @property
    def uses_cross_attention(self) -> bool:
        return self.use_image and self.use_cross_attention


#: Settings added after model folders were first saved, with the value a folder saved without
#: them meant (the feature was off), so that such folders load as they were.
ADDED_AFTER_RELEASE: dict[str, Any] = {
    "region_types": 0.0,
    "region_attention": 0.0,
    "max_images": 1,
    "span_pruning": 0,
    "image_slot_scale": 0.0,
    "ib_gate": False,
    "entity_competition": 0.0,
    "image_dropout": 0.0,
    "text_side_loss": 0.0,
    "localisation_text_gradient": 1.0,
    "region_evidence_pooling": 1,
    "region_evidence_sharpness": 1.0,
    "region_attention_target": "reward",
    "heatmaps": "attention",
    "heatmap_attention_power": 0.1,
}


@dataclass
class BIOTaggerConfig(ModelConfig):
    """The BIO-tagging baselines: a tag per word from the encoder (and the image), softmax or
    CRF on top."""

    type: Literal["bio-tagger"] = "bio-tagger"
    tagger_head: Literal["softmax", "crf"] = "softmax"

    @property
    def label_scheme(self) -> Literal["spans", "bio"]:
        return "bio"
