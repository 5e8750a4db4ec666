"""A generated multimodal NER corpus whose entity types only the image can tell.

Every name in the pool is used as every type equally often and the sentences around the names are
type-neutral, so a text-only model can find the spans but can only guess their types; the photo of
each post shows one drawn cue per entity (a person, a landscape or map, a storefront or logo, a
product) that an ImageNet backbone can recognise. The corpus runs offline on a laptop and makes the
gain of the image measurable: see :func:`generate_corpus`.
"""

from __future__ import annotations

from smner.synth.corpus import SynthPost, SynthSummary, build_posts, generate_corpus
from smner.synth.text import TYPES

__all__ = ["TYPES", "SynthPost", "SynthSummary", "build_posts", "generate_corpus"]
