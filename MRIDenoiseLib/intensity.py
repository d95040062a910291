"""Intensity normalisation shared by training and inference, so both see the same units.

The network works on images divided by a robust maximum of the noisy input; the output is
multiplied back by the same number, so the result is in the input's units. The image may be a
NumPy array or a torch tensor (on a GPU, the percentile is found there, not copied back).

>>> import numpy as np, torch
>>> image = np.linspace(0, 200, 1000).reshape(10, 10, 10)
>>> round(intensity_scale(image), 1), round(intensity_scale(torch.from_numpy(image)), 1)
(199.8, 199.8)
"""

from __future__ import annotations

import math

import numpy as np
import torch

SCALE_PERCENTILE = 99.9


def percentile(image: np.ndarray | torch.Tensor, q: float) -> float:
    """NumPy's default (linear) percentile, also of a tensor on any device.

    >>> percentile(torch.arange(11.0), 95), float(np.percentile(np.arange(11.0), 95))
    (9.5, 9.5)
    """
    if not isinstance(image, torch.Tensor):
        return float(np.percentile(image, q))
    values = image.reshape(-1)
    position = q / 100 * (values.numel() - 1)
    below = math.floor(position)
    # The values from rank ``below`` up, largest first: topk is a radix select on a GPU, where
    # kthvalue over one long vector took a second for 512³ voxels.
    upper = values.topk(values.numel() - below).values
    low = upper[-1]
    if position == below:
        return float(low)
    return float(low + (upper[-2] - low) * (position - below))


def intensity_scale(image: np.ndarray | torch.Tensor) -> float:
    """A robust maximum: the 99.9th percentile, or the maximum where that is zero."""
    scale = percentile(image, SCALE_PERCENTILE)
    if scale <= 0:
        scale = float(image.max())
    return scale if scale > 0 else 1.0
