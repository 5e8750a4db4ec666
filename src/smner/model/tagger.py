"""The sequence-labelling baseline: BIO tags from the same encoders, softmax or CRF head.

Text-only, or with the image's global vector fused into every word (``use_image``): the
baseline that shows what span enumeration and region-level alignment add on top.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from smner.config.model import BIOTaggerConfig
from smner.data.spans import bio_tags, bio_to_entities
from smner.encoders.image_base import ImageEncoder
from smner.encoders.text import TextEncoder
from smner.model.base import ModelOutput, NERModel, PredictedEntity
from smner.model.crf import CRF
from smner.processing.batching import Batch


class BIOTagger(NERModel):
    model_type = "bio-tagger"

    def __init__(
        self,
        config: BIOTaggerConfig,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
    ) -> None:
        super().__init__(config)
        self._attach_encoders(text_encoder, image_encoder)
        self.tags = bio_tags(config.labels)
        hidden = self.text.hidden_size
        features = hidden
        if config.use_image:
            self.image_global = nn.Linear(self.image.output_dim, hidden)
            self.no_image = nn.Parameter(torch.randn(hidden) * 0.02)
            features = 2 * hidden
        self.dropout = nn.Dropout(config.dropout)
        self.emissions = nn.Linear(features, len(self.tags))
        self.crf = CRF(len(self.tags)) if config.tagger_head == "crf" else None

    def labels_of(self, batch: Batch) -> torch.Tensor | None:
        return batch.token_labels

    def _global_image(self, batch: Batch) -> torch.Tensor:
        pooled, _regions, _grid = self.visual_features(batch)
        has_image = batch.has_image.unsqueeze(1)
        projected = self.image_global(pooled)
        return torch.where(has_image, projected, self.no_image.expand_as(projected))

    def forward(self, batch: Batch, labels: torch.Tensor | None = None) -> ModelOutput:
        words, _ = self.text(
            batch.input_ids, batch.attention_mask, batch.word_index, batch.subword_word
        )
        if self.config.use_image:
            visual = self._global_image(batch).unsqueeze(1).expand_as(words)
            words = torch.cat([words, visual], dim=-1)
        logits = self.emissions(self.dropout(words))  # [B, T, tags]
        output = ModelOutput(logits=logits)
        if labels is not None:
            if self.crf is not None:
                loss = self.crf.nll(logits, labels.clamp_min(0), batch.word_mask)
            else:
                loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
            output.loss, output.losses = loss, {"tag_loss": loss}
        return output

    def decode(self, batch: Batch, output: ModelOutput) -> list[list[PredictedEntity]]:
        probs = output.logits.float().softmax(-1)
        lengths = batch.word_mask.sum(1).tolist()
        if self.crf is not None:
            paths = self.crf.viterbi(output.logits.float(), batch.word_mask)
        else:
            paths = [probs[b, :n].argmax(-1).tolist() for b, n in enumerate(lengths)]
        results = []
        for b, path in enumerate(paths):
            tags = [self.tags[i] for i in path]
            post = []
            for entity in bio_to_entities(tags):
                chosen = probs[b, entity.start : entity.end].gather(
                    1, torch.tensor(path[entity.start : entity.end]).unsqueeze(1)
                )
                post.append(PredictedEntity(entity, float(chosen.mean())))
            results.append(post)
        return results
