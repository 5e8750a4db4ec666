"""Prediction: the Predictor and its one loop (prepare -> forward -> postprocess), streaming,
file jobs, worker processes, the image-feature cache and heatmaps.

Names are resolved lazily, so that ``import smner.predict.streaming`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from smner.data.predictions import FailedPost, Mention, PostPrediction
    from smner.predict.predictor import Predictor

_LAZY = {
    "Predictor": "smner.predict.predictor",
    "PostPrediction": "smner.data.predictions",
    "Mention": "smner.data.predictions",
    "FailedPost": "smner.data.predictions",
}

__all__ = ["FailedPost", "Mention", "PostPrediction", "Predictor"]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'smner.predict' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
