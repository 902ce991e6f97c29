"""The optimiser and the learning-rate schedule of a training run."""

from __future__ import annotations

import math

import torch

from stn_train.config import RunConfig

__all__ = ["make_optimizer", "make_scheduler", "lr_factor"]


def make_optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    """Adam / AdamW / SGD (with Nesterov momentum) at ``config.lr``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )


def lr_factor(schedule: str, warmup: int, total: int):
    """The learning-rate multiplier as a function of the step: linear warm-up over
    ``warmup`` steps, then ``schedule`` (cosine to 0 at ``total``, step, or none)."""

    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            span = max(1, total - warmup)
            progress = min(1.0, (step - warmup) / span)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if schedule == "step":  # x0.1 at half and at three quarters of the run
            return 0.1 ** ((step >= total // 2) + (step >= (3 * total) // 4))
        return 1.0

    return factor


def make_scheduler(config: RunConfig, optimizer, total_steps: int):
    """A per-step LambdaLR: cosine to 0, step (x0.1 at 1/2 and 3/4), or constant; with an
    optional linear warm-up of ``warmup_steps``."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_factor(config.schedule, config.warmup_steps, total_steps)
    )
