"""Toy data and settings shared by the training and run-cache tests."""

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is faster and steadier on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def squares(n: int, seed: int) -> TensorDataset:
    """``n`` 16x16 images of noise with one bright square each, and the square's mask."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (n, 1, 16, 16)).astype(np.float32)
    y = np.zeros_like(x)
    for i in range(n):
        r, c = rng.integers(0, 10, 2)
        s = int(rng.integers(3, 7))
        x[i, 0, r:r + s, c:c + s] += 1.0
        y[i, 0, r:r + s, c:c + s] = 1.0
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
