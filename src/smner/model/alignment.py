"""The two alignment modules of SMNER.

Global: a cross-modal information bottleneck between the whole text and the whole image. Each
view is mapped to a diagonal Gaussian; training samples with the reparameterisation trick and
inference uses the means, so predictions repeat exactly. The loss maximises a Jensen-Shannon
estimate of the mutual information between the views and pulls the image distribution toward
the text's with the closed-form KL of two diagonal Gaussians.

Local: cross-modal attention from each span to the visual tokens, whose weights are kept as the
explanation of a prediction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


class InformationBottleneck(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.text_head = GaussianHead(dim)
        self.image_head = GaussianHead(dim)
        self.critic = PairCritic(dim)

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
        return BottleneckOutput(visual=v, mi=mi, kl=kl)


class CrossModalAttention(nn.Module):
    """One transformer cross-attention block: spans query visual tokens.

    Returns the updated span vectors and the attention weights ``[B, S, N]`` (mean over heads).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, queries: torch.Tensor, tokens: torch.Tensor, ignore: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, weights = self.attention(
            queries,
            tokens,
            tokens,
            key_padding_mask=ignore,
            need_weights=True,
            average_attn_weights=True,
        )
        x = self.norm1(queries + self.dropout(attended))
        x = self.norm2(x + self.dropout(self.feed_forward(x)))
        return x, weights
