"""smner: span-based multimodal named entity recognition for social-media posts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from smner.predict import Predictor
    from smner.training import train

__all__ = ["Predictor", "__version__", "train"]


def __getattr__(name: str) -> Any:
    # Lazy: `import smner` (and the CLI's --help) must not pay for importing torch.
    if name == "Predictor":
        from smner.predict import Predictor

        return Predictor
    if name == "train":
        from smner.training import train

        return train
    raise AttributeError(f"module 'smner' has no attribute {name!r}")
