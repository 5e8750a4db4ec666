"""The two alignment modules of SMNER.

Global: a cross-modal information bottleneck between the whole text and the whole image. Each
view is mapped to a diagonal Gaussian; training samples with the reparameterisation trick and
inference uses the means, so predictions repeat exactly. The loss maximises a Jensen-Shannon
estimate of the mutual information between the views and pulls the image distribution toward
the text's with the closed-form KL of two diagonal Gaussians.

Local: cross-modal attention from each span to the visual tokens, whose weights are kept as the
explanation of a prediction. Learned from entity types alone, without boxes, by
:func:`weak_localisation_losses`: a region classifier learns by multiple-instance learning which
types an image shows, and its maps teach each entity's span where its type is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from smner.model.competition import shared_out
from smner.model.heatmaps import neighbourhood_mean

if TYPE_CHECKING:
    from smner.config.model import SMNERConfig

_MIN_SIGMA = 1e-4


class GaussianHead(nn.Module):
    """``x -> (mu, sigma)`` of a diagonal Gaussian (two hidden layers, softplus sigma)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 2 * dim)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, raw = self.net(x).chunk(2, dim=-1)
        return mu, F.softplus(raw) + _MIN_SIGMA


def gaussian_kl(
    mu_p: torch.Tensor, sigma_p: torch.Tensor, mu_q: torch.Tensor, sigma_q: torch.Tensor
) -> torch.Tensor:
    """``KL(N(mu_p, sigma_p) || N(mu_q, sigma_q))`` per row, summed over dimensions."""
    variance_ratio = (sigma_p / sigma_q) ** 2
    mean_term = ((mu_p - mu_q) / sigma_q) ** 2
    return 0.5 * (variance_ratio + mean_term - 1.0 - variance_ratio.log()).sum(dim=-1)


class PairCritic(nn.Module):
    """Scores every (text, image) pair of a batch: ``T(t_i, v_j)`` as an ``[n, n]`` matrix.

    A concatenation MLP whose first layer is split into a text and an image part, so all pairs
    cost one broadcast sum instead of ``n^2`` concatenations.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.text = nn.Linear(dim, dim)
        self.image = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, 1)

    def forward(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.text(t)[:, None, :] + self.image(v)[None, :, :])
        return self.out(hidden).squeeze(-1)

    def matched(self, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``T(t_i, v_i)`` of each row's own pair, ``[n]`` (the diagonal, without the rest)."""
        return self.out(F.gelu(self.text(t) + self.image(v))).squeeze(-1)


def jensen_shannon_mi(scores: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon MI lower bound from pair scores: matched pairs on the diagonal, every
    mismatched pair of the batch off it (Hjelm et al., 2019). Shifted by ``log 4`` so that a
    critic at chance scores 0 and a perfect one approaches ``log 4``."""
    n = scores.size(0)
    diagonal = torch.eye(n, dtype=torch.bool, device=scores.device)
    positive = -F.softplus(-scores[diagonal]).mean()
    negative = F.softplus(scores[~diagonal]).mean()
    return positive - negative + 2 * math.log(2)


@dataclass
class BottleneckOutput:
    visual: torch.Tensor  # [B, D] sample (training) or mean (inference) of p_v
    mi: torch.Tensor  # scalar
    kl: torch.Tensor  # scalar
    #: [B] in (0, 1): how much of the image path each post keeps (the gated bottleneck only)
    gate: torch.Tensor | None = None


class AgreementGate(nn.Module):
    """How much of the image a post keeps, from how its text and image agree in the
    bottleneck's space: a small network over ``[t, v, t * v, |t - v|]`` (the means of the two
    views) and the critic's score of the pair, learned end to end by the entity loss, so that
    a picture which shows other types than the words tell is read as less of a picture. The
    output bias starts the gate open (about 0.9), so training begins as the ungated model does.
    """

    def __init__(self, dim: int, open_bias: float = 2.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4 * dim + 1, dim), nn.GELU(), nn.Linear(dim, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.constant_(self.net[2].bias, open_bias)

    def forward(self, t: torch.Tensor, v: torch.Tensor, agreement: torch.Tensor) -> torch.Tensor:
        features = torch.cat([t, v, t * v, (t - v).abs(), agreement[:, None]], dim=-1)
        return torch.sigmoid(self.net(features).squeeze(-1))


class InformationBottleneck(nn.Module):
    """The global alignment; with ``gate``, also the share of the image path each post keeps
    (see :class:`AgreementGate`)."""

    def __init__(self, dim: int, gate: bool = False) -> None:
        super().__init__()
        self.text_head = GaussianHead(dim)
        self.image_head = GaussianHead(dim)
        self.critic = PairCritic(dim)
        if gate:
            self.gate = AgreementGate(dim)

    def forward(
        self, text: torch.Tensor, image: torch.Tensor, has_image: torch.Tensor
    ) -> BottleneckOutput:
        mu_t, sigma_t = self.text_head(text)
        mu_v, sigma_v = self.image_head(image)
        if self.training:
            t = mu_t + sigma_t * torch.randn_like(sigma_t)
            v = mu_v + sigma_v * torch.randn_like(sigma_v)
        else:
            t, v = mu_t, mu_v
        zero = text.new_zeros(())
        # Posts without an image take no part in the alignment loss.
        kl = (
            gaussian_kl(mu_v, sigma_v, mu_t, sigma_t)[has_image].mean() if has_image.any() else zero
        )
        mi = (
            jensen_shannon_mi(self.critic(t[has_image], v[has_image]))
            if int(has_image.sum()) >= 2
            else zero
        )
        gate = None
        if hasattr(self, "gate"):  # on the means: the same gate in training and at prediction
            gate = self.gate(mu_t, mu_v, self.critic.matched(mu_t, mu_v))
        return BottleneckOutput(visual=v, mi=mi, kl=kl, gate=gate)


class GridPositions(nn.Module):
    """Learned row and column embeddings of a region grid (up to ``max_side`` a side).

    Region features of a frozen backbone describe *what* is in a cell, hardly *where*; added to
    the attention keys, these let a span ask for a place ("the left half") as well as a content.
    """

    def __init__(self, dim: int, max_side: int = 64, scale: float = 0.02) -> None:
        super().__init__()
        self.rows = nn.Embedding(max_side, dim)
        self.cols = nn.Embedding(max_side, dim)
        nn.init.normal_(self.rows.weight, std=scale)
        nn.init.normal_(self.cols.weight, std=scale)

    def forward(self, grid: tuple[int, int]) -> torch.Tensor:
        """``[h * w, dim]``, row-major like the flattened feature map."""
        h, w = grid
        if max(h, w) > self.rows.num_embeddings:
            raise ValueError(f"region grid {grid} exceeds {self.rows.num_embeddings} a side")
        device = self.rows.weight.device
        rows = self.rows(torch.arange(h, device=device))
        cols = self.cols(torch.arange(w, device=device))
        return (rows[:, None, :] + cols[None, :, :]).reshape(h * w, -1)


class SpanPositions(nn.Module):
    """A learned embedding of where a span sits in its post: its centre as a share of the post
    length, in ``buckets`` bins. Added to a span's query, it tells apart spans whose words say
    nothing about their place (two invented names, say)."""

    def __init__(self, dim: int, buckets: int = 16, scale: float = 0.02) -> None:
        super().__init__()
        self.buckets = buckets
        self.embedding = nn.Embedding(buckets, dim)
        nn.init.normal_(self.embedding.weight, std=scale)

    def forward(self, spans: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``spans [S, 2]`` (exclusive ends) and word counts ``[B]`` -> ``[B, S, dim]``."""
        centre = (spans[:, 0] + spans[:, 1] - 1).to(torch.float32) / 2  # [S]
        share = centre[None, :] / lengths.clamp_min(1).to(torch.float32)[:, None]
        bucket = (share * self.buckets).long().clamp_(0, self.buckets - 1)
        return self.embedding(bucket)


class CrossModalAttention(nn.Module):
    """One transformer cross-attention block: spans query visual tokens.

    Returns the updated span vectors and the attention weights ``[B, S, N]`` (mean over heads).
    Optional ``query_offsets`` and ``key_offsets`` (position embeddings) are added to the
    queries and keys only, so the values, and what the classifier reads, stay pure content.
    With ``context_only`` the block's output is the attended visual context without the query
    residual: the classifier then gets the span and what it found in the image apart.
    """

    def __init__(self, dim: int, heads: int, dropout: float, context_only: bool = False) -> None:
        super().__init__()
        self.context_only = context_only
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        ignore: torch.Tensor,
        query_offsets: torch.Tensor | None = None,
        key_offsets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(
            queries if query_offsets is None else queries + query_offsets,
            tokens if key_offsets is None else tokens + key_offsets,
            tokens,
            key_padding_mask=ignore,
            need_weights=True,
            average_attn_weights=True,
        )
        return self._finish(queries, attended), weights

    def weights(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        ignore: torch.Tensor,
        query_offsets: torch.Tensor | None = None,
        key_offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The head-averaged attention weights :meth:`forward` returns (before dropout),
        without the values, the output projection or the feed-forward network."""
        scores = self._head_scores(queries, tokens, ignore, query_offsets, key_offsets)
        return scores.softmax(-1).mean(1)

    def _head_scores(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        ignore: torch.Tensor,
        query_offsets: torch.Tensor | None,
        key_offsets: torch.Tensor | None,
    ) -> torch.Tensor:
        """Each head's scaled dot products ``[B, H, S, T]``, ignored keys at minus infinity,
        with the block's own projections."""
        mha = self.attention
        w_q, w_k, _ = mha.in_proj_weight.chunk(3)
        b_q, b_k, _ = mha.in_proj_bias.chunk(3)
        q = F.linear(queries if query_offsets is None else queries + query_offsets, w_q, b_q)
        k = F.linear(tokens if key_offsets is None else tokens + key_offsets, w_k, b_k)
        q, k = self._split_heads(q), self._split_heads(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1))
        return scores.masked_fill(ignore[:, None, None, :], float("-inf"))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, d] -> [B, H, L, d / H]``"""
        return x.unflatten(-1, (self.attention.num_heads, -1)).transpose(1, 2)

    def _finish(self, queries: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        residual = 0 if self.context_only else queries
        x = self.norm1(residual + self.dropout(attended))
        return self.norm2(x + self.dropout(self.feed_forward(x)))

    def compete(
        self,
        queries: torch.Tensor,
        tokens: torch.Tensor,
        ignore: torch.Tensor,
        valid: torch.Tensor,
        temperature: float,
        query_offsets: torch.Tensor | None = None,
        key_offsets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The block over a post's competing spans ``queries [B, G, d]`` (``valid [B, G]``
        marks the real ones): the same weights as :meth:`forward`, with each key's weight
        shared out among them (see :mod:`smner.model.competition`)."""
        mha = self.attention
        scores = self._head_scores(queries, tokens, ignore, query_offsets, key_offsets)
        weights = shared_out(scores, scores.softmax(-1), valid, temperature)
        _, _, w_v = mha.in_proj_weight.chunk(3)
        _, _, b_v = mha.in_proj_bias.chunk(3)
        values = self._split_heads(F.linear(tokens, w_v, b_v))
        dropped = F.dropout(weights, mha.dropout, self.training)
        attended = mha.out_proj((dropped @ values).transpose(1, 2).flatten(2))
        return self._finish(queries, attended), weights.mean(1)


#: sharpness of the pooling over regions in the multiple-instance loss: between the mean
#: (0) and the max (infinity) of the region scores
_MIL_SHARPNESS = 4.0


@dataclass(frozen=True)
class EvidenceFocus:
    """Where on a piece of evidence the attention is rewarded: the region classifier's map for
    an entity's type, averaged over each cell's ``pooling`` x ``pooling`` neighbourhood and
    raised, relative to its best cell, to the power ``sharpness``.

    A cell's features see well past the cell, so the cells along a small cue's edge score as
    high for its type as the cells it fills, and an attention rewarded on all of them alike
    peaks on an edge as often as on the cue. Averaged over a neighbourhood, the map peaks
    where the evidence is all around, the cue's middle; the power keeps the reward there.
    ``grid`` (rows, columns) is each image's, and the regions of several images are pooled
    image by image; an encoder without a grid (None) is not pooled."""

    grid: tuple[int, int] | None
    pooling: int = 1
    sharpness: float = 1.0
    #: the attention imitates the focused evidence, normalised to a distribution (a
    #: cross-entropy, as box supervision imitates a box's coverage), instead of being rewarded
    #: for the share it puts on it
    imitate: bool = False

    @classmethod
    def of(cls, config: SMNERConfig, grid: tuple[int, int] | None) -> EvidenceFocus | None:
        """The focus a model's config asks for (its ``region_evidence_*`` and
        ``region_attention_target``); None where it leaves the classifier's map as it is."""
        pooling, sharpness = config.region_evidence_pooling, config.region_evidence_sharpness
        imitate = config.region_attention_target == "imitate"
        if pooling == 1 and sharpness == 1 and not imitate:
            return None
        return cls(grid, pooling, sharpness, imitate)

    def __call__(self, shows: torch.Tensor) -> torch.Tensor:
        """The reward of each region ``[N, M * K]`` from the classifier's probabilities."""
        evidence = shows
        if self.pooling > 1 and self.grid is not None:
            evidence = neighbourhood_mean(shows, self.grid, self.pooling)
        relative = evidence / evidence.amax(-1, keepdim=True).clamp_min(1e-6)
        return relative.pow(self.sharpness) if self.sharpness != 1.0 else relative


def weak_localisation_losses(
    region_logits: torch.Tensor,
    region_attention: torch.Tensor,
    labels: torch.Tensor,
    span_mask: torch.Tensor,
    has_image: torch.Tensor,
    boxed: torch.Tensor | None = None,
    focus: EvidenceFocus | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Localisation learned from entity types alone: ``(multiple-instance loss, attention
    loss)``.

    Multiple instances: an image is a bag of regions, and it shows the types its post names.
    ``region_logits [B, K, T]`` score each region for each type; pooled over the regions (a
    smooth maximum), they are trained against the post's types with a binary cross-entropy, so
    that a region scores high for a type where that type's evidence is (Ilse et al., 2018;
    WSDDN). Pseudo-labels: each gold entity's span attention over the regions
    ``region_attention [B, S, K]`` is rewarded for the share it puts on regions the (detached)
    classifier says show the entity's type, relative to the best such region. A classifier
    that cannot yet tell the regions apart pulls the attention nowhere (unlike a target map,
    which would pull it toward uniform), and a post whose image does not show the type at all
    weighs little. Two entities of different
    types in one post get different targets, which is what per-span attention alone never
    forced. ``labels [B, S]`` are span label ids (0: not an entity), ``boxed [N, 2]`` the
    (post, span) pairs that learn from a box instead (left out here); ``focus`` moves the
    reward toward the middle of each piece of evidence (:class:`EvidenceFocus`).
    """
    zero = region_logits.new_zeros(())
    if not bool(has_image.any()):
        return zero, zero
    types = region_logits.size(-1)
    gold = (labels > 0) & span_mask & has_image[:, None]
    present = torch.zeros(labels.size(0), types + 1, device=labels.device)
    present.scatter_(1, labels.masked_fill(~gold, 0), 1.0)
    pooled = (
        torch.logsumexp(_MIL_SHARPNESS * region_logits, dim=1) - math.log(region_logits.size(1))
    ) / _MIL_SHARPNESS  # [B, T]
    mil = F.binary_cross_entropy_with_logits(pooled[has_image], present[has_image, 1:])
    if boxed is not None and boxed.numel():
        gold = gold.clone()
        gold[boxed[:, 0], boxed[:, 1]] = False
    posts, spans = gold.nonzero(as_tuple=True)
    if posts.numel() == 0:
        return mil, zero
    # how sure the classifier is that each region shows the entity's type (detached: the
    # attention follows the classifier, never the other way round)
    shows = region_logits.detach()[posts, :, labels[posts, spans] - 1].sigmoid()  # [N, K]
    confidence = shows.amax(-1)  # does the image show the type at all?
    attended = region_attention[posts, spans]
    if focus is None:  # the share of the attention on the evidence, relative to its best region
        found = (attended * shows).sum(-1)
        nll = -(found.clamp_min(1e-6) / confidence.clamp_min(1e-6)).clamp_max(1.0).log()
    elif focus.imitate:  # cross-entropy to the evidence as a distribution, as to a box's
        target = focus(shows)
        target = target / target.sum(-1, keepdim=True).clamp_min(1e-6)
        nll = -(target * attended.clamp_min(1e-8).log()).sum(-1)
    else:  # the focused reward is relative already
        nll = -(attended * focus(shows)).sum(-1).clamp(1e-6, 1.0).log()
    attention = (confidence * nll).sum() / confidence.sum().clamp_min(1e-6)
    return mil, attention + competition(region_attention, posts, spans, labels)


def competition(
    region_attention: torch.Tensor, posts: torch.Tensor, spans: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Entities of different types in one post compete for the regions: the mean overlap
    ``sum_k min(a_i[k], a_j[k])`` of their attention maps (0: disjoint, 1: the same map), so
    that two names cannot settle on one picture of one of them."""
    maps = region_attention[posts, spans]  # [N, K]
    kinds = labels[posts, spans]
    same_post = posts[:, None] == posts[None, :]
    other_type = kinds[:, None] != kinds[None, :]
    pairs = torch.triu(same_post & other_type, diagonal=1).nonzero(as_tuple=True)
    if pairs[0].numel() == 0:
        return region_attention.new_zeros(())
    return torch.minimum(maps[pairs[0]], maps[pairs[1]]).sum(-1).mean()
