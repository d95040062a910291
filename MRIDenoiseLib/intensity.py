"""Intensity normalisation shared by training and inference, so both see the same units.

The network works on images divided by a robust maximum of the noisy input; the output is
multiplied back by the same number, so the result is in the input's units.

>>> import numpy as np
>>> image = np.linspace(0, 200, 1000).reshape(10, 10, 10)
>>> round(intensity_scale(image), 1)
199.8
"""

from __future__ import annotations

import numpy as np

SCALE_PERCENTILE = 99.9


def intensity_scale(image: np.ndarray) -> float:
    """A robust maximum: the 99.9th percentile, or the maximum where that is zero."""
    scale = float(np.percentile(image, SCALE_PERCENTILE))
    if scale <= 0:
        scale = float(np.max(image))
    return scale if scale > 0 else 1.0
