"""What one optimizer step is made of: AdamW's parameter groups, its schedule, gradient
clipping groups and mixed precision, each a function of the model and ``train`` settings."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from transformers import get_linear_schedule_with_warmup

from smner.config.experiment import TrainConfig
from smner.model.base import NERModel


def build_optimizer(model: NERModel, train: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the encoders' and the heads' learning rates, and no decay on biases/norms."""
    pretrained = {id(p) for p in model.pretrained_parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "norm" in name.lower()
        groups.setdefault((id(p) in pretrained, no_decay), []).append(p)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": train.encoder_lr if is_pretrained else train.head_lr,
                "weight_decay": 0.0 if no_decay else train.weight_decay,
            }
            for (is_pretrained, no_decay), params in sorted(groups.items())
        ],
        eps=train.adam_epsilon,
    )


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, train_posts: int) -> Any:
    """Linear warm-up then decay over every step of ``train.epochs`` epochs."""
    steps_per_epoch = math.ceil(train_posts / (train.batch_size * train.accumulate))
    total_steps = steps_per_epoch * train.epochs
    return get_linear_schedule_with_warmup(
        optimizer, int(train.warmup_ratio * total_steps), total_steps
    )


def clip_groups(model: NERModel) -> list[list[torch.nn.Parameter]]:
    """Trainable parameters in groups clipped apart: each detached head, then the rest."""
    heads = [[p for p in head.parameters() if p.requires_grad] for head in model.detached_heads()]
    apart = {id(p) for group in heads for p in group}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in apart]
    return [group for group in [rest, *heads] if group]


def apply_gradients(
    model: NERModel,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    grad_clip: float,
) -> None:
    """Clip (``grad_clip`` 0: not at all), step the optimizer and the schedule."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if grad_clip:
        for group in clip_groups(model):
            torch.nn.utils.clip_grad_norm_(group, grad_clip)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision as ``train.mixed_precision`` asks ("no", "bf16" or "fp16")."""
    if precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
