"""SMNER: span-based multimodal NER with global and local cross-modal alignment.

Reading order: encode words and the image; represent every span up to the width limit; align
the whole text with the whole image (information bottleneck); let each span attend to the
visual tokens (cross-attention); classify ``[span ; attended visual]``; decode the best
non-overlapping spans. A post without an image attends to a learned "no image" token instead
of its (masked) visual tokens, and takes no part in the bottleneck loss.

Several images: a post brings up to ``max_images`` of them. The visual tokens are the no-image
token, one global token (the bottleneck's output, fed a pool over the post's images), and the
regions of every image one after the other, each image's keys tagged with a learned
image-slot embedding; the slots a post leaves empty are masked out of the attention. A model
with ``max_images = 1`` has no slot embedding, and is the one-image model exactly.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from smner.config.model import SMNERConfig
from smner.encoders.image_base import ImageEncoder
from smner.encoders.text import TextEncoder
from smner.errors import SmnerError
from smner.model.alignment import (
    CrossModalAttention,
    EvidenceFocus,
    GridPositions,
    InformationBottleneck,
    SpanPositions,
    weak_localisation_losses,
)
from smner.model.base import CompetitionInputs, ModelOutput, NERModel, PredictedEntity
from smner.model.competition import competitive_pass
from smner.model.grounding import GroundingHead, grounding_loss
from smner.model.heatmaps import with_evidence_heatmaps
from smner.model.span_decoding import decode_entities
from smner.model.span_losses import box_attention_loss, span_loss
from smner.model.span_pruning import pruned_alignment
from smner.model.span_representation import SpanRepresentation
from smner.model.visual_tokens import (
    FIRST_REGION,
    GLOBAL,
    NO_IMAGE,
    chosen_image_attention,
    gated,
    masked_pool,
)
from smner.model.word_context import WordContext
from smner.processing.batching import SHAPES, Batch

#: visual tokens are [no-image, global, regions of image 1 (K), regions of image 2 (K), ...]
_NO_IMAGE, _GLOBAL, _FIRST_REGION = NO_IMAGE, GLOBAL, FIRST_REGION
#: what the region classifier scores in an empty image slot (its regions are no evidence)
_ABSENT_LOGIT = -1e4


class SMNER(NERModel):
    model_type = "smner"

    def __init__(
        self,
        config: SMNERConfig,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
    ) -> None:
        super().__init__(config)
        self._attach_encoders(text_encoder, image_encoder)
        d = config.hidden_size
        if config.word_context_layers:
            width = self.text.hidden_size
            heads = config.attention_heads if width % config.attention_heads == 0 else 1
            self.word_context = WordContext(
                width, len(SHAPES), config.word_context_layers, heads, config.dropout
            )
        self.span_representation = SpanRepresentation(
            self.text.hidden_size,
            d,
            config.max_span_width,
            config.width_embedding_dim,
            config.shape_embedding_dim,
            len(SHAPES),
            config.dropout,
        )
        classifier_in = d
        if config.use_image:
            self.image_global = nn.Linear(self.image.output_dim, d)
            self.no_image = nn.Parameter(torch.randn(d) * 0.02)
            if config.use_ib:
                self.text_global = nn.Linear(self.text.hidden_size, d)
                self.bottleneck = InformationBottleneck(d, gate=config.ib_gate)
            if config.use_cross_attention:
                self.image_regions = nn.Linear(self.image.output_dim, d)
                self.cross_attention = CrossModalAttention(
                    d,
                    config.attention_heads,
                    config.dropout,
                    context_only=config.visual_context == "context",
                )
                if config.region_positions:
                    self.region_positions = GridPositions(d, scale=config.position_scale)
                if config.query_positions:
                    self.query_positions = SpanPositions(d, scale=config.position_scale)
                if config.grounding:
                    self.grounding_head = GroundingHead(d, config.dropout)
                if config.region_types:
                    self.region_classifier = nn.Linear(d, len(config.labels))
            classifier_in = 2 * d
        self.classifier = nn.Sequential(
            nn.Linear(classifier_in, d),
            nn.GELU(),
            nn.Dropout(config.dropout),
            nn.Linear(d, len(config.id_to_label)),
        )
        if config.use_image and config.use_cross_attention and config.max_images > 1:
            # Built last, so that every other weight draws as in a one-image model. The first
            # image's keys get no tag, so that a post of one image reads as in a one-image
            # model (a tag added to every key of one image shifts the balance with the global
            # token); the others' tags start at image_slot_scale, so that they can tell the
            # images apart from the first step (from zero they hardly did).
            self.image_slots = nn.Embedding(config.max_images, d)
            nn.init.zeros_(self.image_slots.weight)
            if config.image_slot_scale:  # tags relative to the first image's (see the config)
                nn.init.normal_(self.image_slots.weight[1:], std=config.image_slot_scale)

    @property
    def explains(self) -> bool:
        return self.config.use_image and self.config.use_cross_attention

    @property
    def grounds(self) -> bool:
        return self.config.grounding and self.explains

    def detached_heads(self) -> list[nn.Module]:
        return [self.grounding_head] if self.grounds else []

    # --- forward ---------------------------------------------------------------------------

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> ModelOutput:
        cfg = self.config
        words, sentence = self.text(
            batch.input_ids, batch.attention_mask, batch.word_index, batch.subword_word
        )
        if cfg.word_context_layers:
            words = self.word_context(words, batch.shape_ids, batch.word_mask)
        spans = self.span_representation(words, batch.shape_ids, batch.spans)  # [B, S, d]
        losses: dict[str, torch.Tensor] = {}
        attention, grid, grounding, gate = None, None, None, None
        if cfg.use_image:
            if batch.image_slots > cfg.max_images:
                raise SmnerError(
                    f"a post with {batch.image_slots} image slots: this model takes at most "
                    f"{cfg.max_images} (model.max_images)"
                )
            pooled, regions, slots, grid = self.visual_slots(batch)
            has_image = batch.has_image
            if self.training and cfg.image_dropout:
                # modality dropout: these posts are read as posts without a picture this step
                kept = torch.rand(batch.size, device=has_image.device) >= cfg.image_dropout
                has_image, slots = has_image & kept, slots & kept[:, None]
            visual = self.image_global(masked_pool(pooled, slots))
            if cfg.use_ib:
                ib = self.bottleneck(self.text_global(sentence), visual, has_image)
                visual, gate = ib.visual, ib.gate
                losses["mi"], losses["kl"] = ib.mi, ib.kl
            no_image = self.no_image.expand(batch.size, -1)
            if cfg.use_cross_attention:
                cells = regions.size(2)
                region_tokens = self.image_regions(regions).flatten(1, 2)  # [B, M * K, d]
                tokens = torch.cat(
                    [no_image.unsqueeze(1), visual.unsqueeze(1), region_tokens], dim=1
                )
                ignore = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
                ignore[:, _NO_IMAGE] = has_image
                ignore[:, _GLOBAL] = ~has_image
                ignore[:, _FIRST_REGION:] = ~slots.repeat_interleave(cells, dim=1)
                token_keys = (tokens, ignore)
                offsets = self._position_offsets(batch, tokens, grid)
                keep = self._spans_kept(spans.size(1), labels)
                if keep:
                    head = self.grounding_head if cfg.grounding and grid is not None else None
                    layers, images = (self.cross_attention, self.classifier, head), (slots, grid)
                    logits, attention, grounding = pruned_alignment(
                        layers, batch, spans, no_image, token_keys, offsets, images, keep, gate
                    )
                    output = ModelOutput(
                        logits=logits, attention=attention, grid=grid, grounding=grounding
                    )
                    if cfg.entity_competition:
                        output = self._compete_or_defer(
                            batch, spans, output, token_keys, offsets, gate
                        )
                    return self._heatmaps(output, region_tokens)
                attended, attention = self.cross_attention(spans, tokens, ignore, *offsets)
                if gate is not None:
                    attended = gated(attended, self._no_image_context(spans, no_image), gate)
                if cfg.grounding and grid is not None:
                    # Detached: the grounding loss trains its own head only, so grounding costs
                    # the entity types nothing (through the shared layers it cut a small
                    # model's F1 by half). With several images, the head sees each span's
                    # attention over the image it attends to most.
                    grounding = self.grounding_head(
                        spans.detach(),
                        attended.detach(),
                        chosen_image_attention(attention.detach(), slots),
                        grid,
                        _FIRST_REGION,
                    )
            else:
                if gate is not None:
                    visual = gated(visual, no_image, gate)
                chosen = torch.where(has_image.unsqueeze(1), visual, no_image)
                attended = chosen.unsqueeze(1).expand_as(spans)
            features = torch.cat([spans, attended], dim=-1)
        else:
            features = spans
        logits = self.classifier(features)
        output = ModelOutput(logits=logits, attention=attention, grid=grid, grounding=grounding)
        competition_loss = None
        if attention is not None and cfg.entity_competition:
            if labels is None:
                output = self._compete_or_defer(batch, spans, output, token_keys, offsets, gate)
            else:
                output.logits, output.attention, competition_loss = self._compete(
                    batch, spans, logits, attention, token_keys, offsets, gate, labels, has_image
                )
        if labels is not None:
            losses["span_ce"] = span_loss(cfg, logits, labels, batch.span_mask)
            total = losses["span_ce"]
            if cfg.use_image and cfg.text_side_loss:
                text_logits = self._text_side_logits(spans)
                losses["text_side"] = span_loss(cfg, text_logits, labels, batch.span_mask)
                total = total + cfg.text_side_loss * losses["text_side"]
            if competition_loss is not None:
                losses["competition"] = competition_loss
                total = total + competition_loss
            if attention is not None and batch.attention_target is not None:
                losses["attention"] = box_attention_loss(attention, batch, has_image)
                total = total + cfg.attention_supervision * losses["attention"]
            if attention is not None and cfg.region_types and bool(has_image.any()):
                region_logits = self.region_classifier(region_tokens)  # [B, M * K, types]
                if slots.size(1) > 1:
                    present = slots.repeat_interleave(regions.size(2), dim=1).unsqueeze(-1)
                    region_logits = region_logits.masked_fill(~present, _ABSENT_LOGIT)
                # the attention over all regions of all images, flattened [B, S, M * K]
                weak = weak_localisation_losses(
                    region_logits,
                    self._localisation_attention(attention, spans, token_keys, offsets),
                    labels,
                    batch.span_mask,
                    has_image,
                    boxed=batch.attention_target_index,
                    focus=EvidenceFocus.of(cfg, grid),
                )
                losses["region_types"], losses["region_attention"] = weak
                total = total + cfg.region_types * weak[0] + cfg.region_attention * weak[1]
            if grounding is not None and batch.ground_index is not None:
                assert batch.ground_in_image is not None and batch.ground_boxes is not None
                assert batch.ground_box_mask is not None
                losses["grounding"] = grounding_loss(
                    grounding,
                    batch.ground_index,
                    batch.ground_in_image,
                    batch.ground_boxes,
                    batch.ground_box_mask,
                )
                total = total + cfg.grounding_weight * losses["grounding"]
            if "mi" in losses:
                total = total - cfg.ib_alpha * losses["mi"] + cfg.ib_beta * losses["kl"]
            output.loss, output.losses = total, losses
        elif attention is not None:
            output = self._heatmaps(output, region_tokens)
        return output

    def _localisation_attention(
        self,
        attention: torch.Tensor,
        spans: torch.Tensor,
        visual: tuple[torch.Tensor, torch.Tensor],
        offsets: tuple[torch.Tensor | None, torch.Tensor | None],
    ) -> torch.Tensor:
        """The span attention over the regions ``[B, S, M * K]`` the weak localisation loss
        reads: the forward's own, or the same weights recomputed from queries that pass only
        ``localisation_text_gradient`` of the loss's gradient on to the text side."""
        share = self.config.localisation_text_gradient
        if share < 1.0:  # same values; the gradient to ``spans`` scaled by ``share``
            queries = torch.lerp(spans.detach(), spans, share)
            attention = self.cross_attention.weights(queries, *visual, *offsets)
        return attention[:, :, _FIRST_REGION:]

    def compete_after(self, batch: Batch, output: ModelOutput) -> ModelOutput:
        """``output`` of a first pass that ran elsewhere (an exported graph, which hands out
        :class:`CompetitionInputs`) with the competitive pass run over it, as ``forward``
        runs it."""
        state = output.competition
        if state is None:
            return output
        offsets = self._position_offsets(batch, state.tokens, output.grid)
        visual = (state.tokens, state.ignore)
        logits, attention, _ = self._compete(
            batch, state.spans, output.logits, output.attention, visual, offsets, state.gate
        )
        output = replace(output, logits=logits, attention=attention, competition=None)
        return self._heatmaps(output, state.tokens[:, _FIRST_REGION:])

    def _heatmaps(self, output: ModelOutput, region_tokens: torch.Tensor) -> ModelOutput:
        """``output`` with the heatmaps ``model.heatmaps`` asks for (at prediction): the
        attention as it is, or weighted by the region classifier's evidence."""
        if self.config.heatmaps != "evidence":
            return output
        logits = self.region_classifier(region_tokens)
        return with_evidence_heatmaps(output, logits, self.config.heatmap_attention_power)

    def _compete_or_defer(
        self,
        batch: Batch,
        spans: torch.Tensor,
        output: ModelOutput,
        visual: tuple[torch.Tensor, torch.Tensor],
        offsets: tuple[torch.Tensor | None, torch.Tensor | None],
        gate: torch.Tensor | None,
    ) -> ModelOutput:
        """The competitive pass at prediction; while exporting, what it reads (a decode picks
        its members, which a graph cannot hold: the backend runs :meth:`compete_after`)."""
        if torch.compiler.is_exporting():
            output.competition = CompetitionInputs(spans, *visual, gate)
            return output
        output.logits, output.attention, _ = self._compete(
            batch, spans, output.logits, output.attention, visual, offsets, gate
        )
        return output

    def _compete(
        self,
        batch: Batch,
        spans: torch.Tensor,
        logits: torch.Tensor,
        attention: torch.Tensor,
        visual: tuple[torch.Tensor, torch.Tensor],
        offsets: tuple[torch.Tensor | None, torch.Tensor | None],
        gate: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The competitive pass (:func:`smner.model.competition.competitive_pass`), through
        the gated bottleneck's gate where there is one."""
        regate = None
        if gate is not None:
            no_image = self.no_image.expand(batch.size, -1)

            def regate(attended: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
                return gated(attended, self._no_image_context(queries, no_image), gate)

        return competitive_pass(
            self.cross_attention,
            self.classifier,
            (batch, spans, logits, attention),
            visual,
            offsets,
            self.config.entity_competition,
            batch.has_image if has_image is None else has_image,
            labels,
            regate,
        )

    def _text_side_logits(self, spans: torch.Tensor) -> torch.Tensor:
        """Each span's logits as if its post had no picture: what the words alone tell."""
        no_image = self.no_image.expand(spans.size(0), -1)
        if self.config.use_cross_attention:
            context = self._no_image_context(spans, no_image)
            return self.classifier(torch.cat([spans, context.expand_as(spans)], dim=-1))
        return self.classifier(torch.cat([spans, no_image[:, None].expand_as(spans)], dim=-1))

    def _no_image_context(self, spans: torch.Tensor, no_image: torch.Tensor) -> torch.Tensor:
        """What the span-to-region block gives a span with no picture (the no-image token its
        only key): where the gated bottleneck closes, the image path reads as this. With
        ``visual_context`` "context" it is one vector a post, whatever the span."""
        queries = spans[:, :1] if self.config.visual_context == "context" else spans
        alone = torch.zeros(spans.size(0), 1, dtype=torch.bool, device=spans.device)
        context, _ = self.cross_attention(queries, no_image.unsqueeze(1), alone)
        return context

    def _spans_kept(self, spans: int, labels: torch.Tensor | None) -> int:
        """How many spans a post sends through the span-to-region attention at prediction
        (0: all of them; see :mod:`smner.model.span_pruning`)."""
        keep = self.config.span_pruning
        if labels is not None or self.training or self.config.visual_context != "context":
            return 0
        if torch.compiler.is_exporting():  # a graph takes posts of any length
            return keep
        return keep if 0 < keep < spans else 0

    def _position_offsets(
        self, batch: Batch, tokens: torch.Tensor, grid: tuple[int, int] | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Query and key offsets of the cross-attention (None where the config has none)."""
        queries = keys = None
        if self.config.query_positions:
            queries = self.query_positions(batch.spans, batch.word_mask.sum(1))
        slotted = hasattr(self, "image_slots")
        if (self.config.region_positions or slotted) and grid is not None:
            keys = torch.zeros_like(tokens[:1])
            cells = grid[0] * grid[1]
            images = (tokens.size(1) - _FIRST_REGION) // cells
            if self.config.region_positions:
                positions = self.region_positions(grid)
                keys[:, _FIRST_REGION:] = positions if images == 1 else positions.repeat(images, 1)
            if slotted:
                tags = self.image_slots.weight[:images]
                if self.config.image_slot_scale:
                    tags = tags - self.image_slots.weight[:1]
                tags = tags.repeat_interleave(cells, dim=0)
                keys[:, _FIRST_REGION:] = keys[:, _FIRST_REGION:] + tags
        return queries, keys

    # --- decoding --------------------------------------------------------------------------

    def decode(self, batch: Batch, output: ModelOutput) -> list[list[PredictedEntity]]:
        return decode_entities(batch, output, self.config)
