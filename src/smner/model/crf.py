"""A linear-chain conditional random field: negative log-likelihood and Viterbi decoding.

Small and self-contained: the maintained alternatives on PyPI have not been updated for
current PyTorch. Masks must be left-aligned (every post has at least one token).
"""

from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    def __init__(self, num_tags: int) -> None:
        super().__init__()
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        nn.init.uniform_(self.transitions, -0.1, 0.1)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``log Z`` per sequence: log-sum-exp over every tag path (forward algorithm)."""
        alpha = self.start + emissions[:, 0]  # [B, C]
        for t in range(1, emissions.size(1)):
            step = alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1)
            alpha = torch.where(mask[:, t : t + 1], torch.logsumexp(step, dim=1), alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def path_score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Unnormalised score of the given tag paths."""
        batch = torch.arange(emissions.size(0), device=emissions.device)
        score = self.start[tags[:, 0]] + emissions[batch, 0, tags[:, 0]]
        for t in range(1, emissions.size(1)):
            step = self.transitions[tags[:, t - 1], tags[:, t]] + emissions[batch, t, tags[:, t]]
            score = score + step * mask[:, t]
        last = tags[batch, mask.sum(1) - 1]
        return score + self.end[last]

    def nll(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the gold paths."""
        tags = tags.masked_fill(~mask, 0)
        return (self.log_partition(emissions, mask) - self.path_score(emissions, tags, mask)).mean()

    @torch.no_grad()
    def viterbi(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The best tag path of each sequence, as lists of tag ids of the sequence's length."""
        score = self.start + emissions[:, 0]
        pointers = []
        for t in range(1, emissions.size(1)):
            step = score.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1)
            best, index = step.max(dim=1)
            pointers.append(index)
            score = torch.where(mask[:, t : t + 1], best, score)
        score = score + self.end
        lengths = mask.sum(1).tolist()
        paths = []
        for b, length in enumerate(lengths):
            tag = int(score[b].argmax())
            path = [tag]
            for t in range(length - 1, 0, -1):
                tag = int(pointers[t - 1][b, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths
