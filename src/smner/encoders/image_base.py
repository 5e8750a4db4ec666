"""The interface every image backbone implements: pixels in, a global vector and a grid of
region vectors out, frozen by default, with a fingerprint naming its exact computation."""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Self

import torch

from smner.encoders.preprocessing import ImagePreprocessing


@dataclass
class ImageFeatures:
    """What every encoder returns: a global vector and region vectors per image."""

    pooled: torch.Tensor  # [B, D]
    regions: torch.Tensor  # [B, K, D]
    grid: tuple[int, int]  # (h, w), h * w == K


class ImageEncoder(torch.nn.Module, abc.ABC):
    """A vision backbone that maps ``[B, 3, S, S]`` pixels to :class:`ImageFeatures`.

    Encoders start frozen (no gradients, eval mode), as the method keeps the backbone fixed; while
    frozen, ``train()`` leaves them in eval mode so BatchNorm statistics and dropout never change.
    """

    name: str
    output_dim: int
    preprocessing: ImagePreprocessing

    def __init__(self, name: str, output_dim: int, preprocessing: ImagePreprocessing) -> None:
        super().__init__()
        self.name = name
        self.output_dim = output_dim
        self.preprocessing = preprocessing
        self.trainable = True
        self._fingerprint_memo: tuple[Hashable, str] | None = None
        self._grid_memo: tuple[ImagePreprocessing, tuple[int, int]] | None = None

    @abc.abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> ImageFeatures: ...

    @abc.abstractmethod
    def config_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild this architecture without files or network."""

    def set_trainable(self, flag: bool) -> None:
        """Turn gradients on or off for every weight; a frozen encoder also goes to eval mode."""
        self.trainable = flag
        for parameter in self.parameters():
            parameter.requires_grad_(flag)
        if not flag:
            self.train(False)

    def train(self, mode: bool = True) -> Self:
        """Like ``nn.Module.train``, except that a frozen encoder stays in eval mode."""
        return super().train(mode and self.trainable)

    def fingerprint(self) -> str:
        """A sha256 naming this encoder's exact computation, for feature-cache keys.

        It covers the architecture, the preprocessing and the bytes of every weight and buffer.
        It is meant for frozen backbones (cached features of a training backbone go stale at
        once); it is memoised and recomputed only when a weight is modified in place, replaced,
        or the preprocessing changes.
        """
        key = self._fingerprint_key()
        if key is not None and self._fingerprint_memo is not None:
            memo_key, digest = self._fingerprint_memo
            if memo_key == key:
                return digest
        digest = self._compute_fingerprint()
        if key is not None:
            self._fingerprint_memo = (key, digest)
        return digest

    def _fingerprint_key(self) -> Hashable | None:
        try:
            versions = tuple(
                (name, id(t), t.data_ptr(), t._version)
                for name, t in self.state_dict(keep_vars=True).items()
            )
        except RuntimeError:  # inference-mode tensors carry no version counter
            return None
        return (self.preprocessing, versions)

    def _compute_fingerprint(self) -> str:
        # Volatile keys (where the weights came from, which library version wrote them) are left
        # out, so the same weights loaded from another folder reuse the same cache.
        config = {
            k: v
            for k, v in self.config_dict().items()
            if k not in ("_name_or_path", "transformers_version", "_commit_hash")
        }
        header = {
            "class": type(self).__name__,
            "config": config,
            "preprocessing": self.preprocessing.to_dict(),
            # bumped when the preprocessing code changes its output, so old cache entries miss
            "preprocessing_revision": 2,
        }
        hasher = hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode())
        state = self.state_dict()
        for name in sorted(state):
            tensor = state[name].detach()
            hasher.update(f"\n{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
            hasher.update(tensor.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return hasher.hexdigest()

    def output_grid(self) -> tuple[int, int]:
        """The region grid ``(h, w)`` this encoder produces at its preprocessing size."""
        if self._grid_memo is not None and self._grid_memo[0] == self.preprocessing:
            return self._grid_memo[1]
        parameter = next(self.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        size = self.preprocessing.size
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                grid = self(torch.zeros(1, 3, size, size, device=device)).grid
        finally:
            self.train(was_training)
        self._grid_memo = (self.preprocessing, grid)
        return grid


def flatten_feature_map(maps: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``[B, C, h, w]`` to regions ``[B, h*w, C]`` (row-major) and the grid."""
    _, _, height, width = maps.shape
    return maps.flatten(2).transpose(1, 2), (int(height), int(width))
