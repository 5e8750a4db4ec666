"""The visual tokens a span attends to, and which image of a post a span looks at.

The tokens of a post are ``[no-image, global, regions of image 1 (K), regions of image 2 (K),
...]``: the no-image token is the only key of a post without a picture, the global token is
the bottleneck's view of the whole post's images, and each image slot adds its grid of
regions (absent slots are masked out).
"""

from __future__ import annotations

import torch

#: the token layout
NO_IMAGE, GLOBAL, FIRST_REGION = 0, 1, 2


def masked_pool(pooled: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """The mean of each post's image features over the slots that hold an image: ``[B, M, Dv]``
    and ``[B, M]`` -> ``[B, Dv]`` (zero for a post without any; one slot is taken as it is)."""
    if pooled.size(1) == 1:
        return pooled[:, 0]
    kept = torch.where(slots.unsqueeze(-1), pooled, torch.zeros_like(pooled)).sum(1)
    return kept / slots.sum(1, keepdim=True).clamp_min(1).to(pooled.dtype)


def attended_image(attention: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``[B, S]``: for each span, the image slot whose regions got the most of its attention
    ``[B, S, 2 + M * K]`` (only slots that hold an image, ``slots [B, M]``; 0 for one)."""
    images = slots.size(1)
    regions = attention[..., FIRST_REGION:]
    if images == 1 or regions.size(-1) == 0:
        return torch.zeros(attention.shape[:2], dtype=torch.long, device=attention.device)
    mass = regions.unflatten(-1, (images, -1)).sum(-1)  # [B, S, M]
    mass = mass.masked_fill(~slots.unsqueeze(1), -1.0)
    return mass.argmax(-1)


def chosen_image_attention(attention: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """Each span's attention over the no-image and global tokens and the regions of the image
    it attends to most: ``[B, S, 2 + M * K]`` -> ``[B, S, 2 + K]`` (unchanged for one image)."""
    images = slots.size(1)
    if images == 1:
        return attention
    regions = attention[..., FIRST_REGION:].unflatten(-1, (images, -1))  # [B, S, M, K]
    index = attended_image(attention, slots)[..., None, None].expand(-1, -1, 1, regions.size(-1))
    chosen = regions.gather(2, index).squeeze(2)
    return torch.cat([attention[..., :FIRST_REGION], chosen], dim=-1)


def gated(image_path: torch.Tensor, fill: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``gate * image_path + (1 - gate) * fill`` per post: ``image_path [B, ..., D]``, ``fill``
    broadcastable to it (what the path reads without an image), ``gate [B]``."""
    weight = gate.reshape(gate.size(0), *(1,) * (image_path.dim() - 1)).to(image_path.dtype)
    return weight * image_path + (1 - weight) * fill
