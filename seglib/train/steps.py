"""One bare training step, for measuring a step (table A2, the benchmarks) without what ``fit`` adds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from seglib.train.device import autocast


def bare_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
              optimizer: torch.optim.Optimizer, device: torch.device, precision: str) -> torch.Tensor:
    """One bare training step: zero the gradients, forward under :func:`autocast`, the loss in fp32,
    backward, optimiser step; returns the detached loss. For measuring a step (table A2, the
    benchmarks) without the work ``fit`` adds around it."""
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def fixed_batch_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable,
                     optimizer: torch.optim.Optimizer, device: torch.device, precision: str) -> Callable[[], torch.Tensor]:
    """:func:`bare_step` on fixed tensors, as a closure to time."""
    return lambda: bare_step(model, x, y, loss_fn, optimizer, device, precision)
