"""Several trained binary models as one: the mean of their foreground probabilities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Ensemble(nn.Module):
    """``forward`` returns the logit of the members' mean foreground probability, so every caller that
    takes ``sigmoid`` of a model's logits (the evaluation, the sliding window, the test-time flips, ``seglib
    predict``) gets the averaged probability, and its threshold applies to it. Members run in eval mode in
    the order given; the probabilities are averaged in fp32 and clamped to [1e-7, 1 - 1e-7] before the
    logit (a probability of exactly 0 or 1 has none)."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.sigmoid(m(x).float()) for m in self.members]).mean(0).clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p)
