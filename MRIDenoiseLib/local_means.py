"""Giving back what denoising took from the mean of each small neighbourhood.

The network's last step averages neighbours that look alike; structure fainter than about one
noise sigma (a small lesion, say) looks like noise to it and is partly averaged away with its
surroundings. ``restore_local_means`` adds back the mean of the residual (input minus output)
over each voxel's 3x3x3 neighbourhood (about 3 mm: along an axis whose voxels are over 1.5 times
the finest, one voxel). Pure noise averages to about sigma/5 there; a structure of a few voxels
that was dimmed leaves its loss in that mean, and gets it back. The price is that noise of about
sigma/5, and so some PSNR (``benchmarks/quality.py --preserve-detail``).

Dark voxels are left alone: where the magnitude is near the noise floor the residual holds the
Rician bias (the noisy background averages 1.25 sigma, the denoised one 0), which is not detail.

>>> import numpy as np
>>> noisy = np.full((12, 12, 12), 100.0, dtype=np.float32)
>>> noisy[5:8, 5:8, 5:8] = 110  # a 3-voxel lesion ...
>>> dimmed = np.full_like(noisy, 100.0)
>>> dimmed[5:8, 5:8, 5:8] = 104  # ... that the denoiser dimmed to 40% of its contrast
>>> restored = restore_local_means(noisy, dimmed, sigma=5.0, spacing_zyx=(1.0, 1.0, 1.0))
>>> round(float(restored[6, 6, 6] - restored[0, 0, 0]), 1)
10.0
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# In units of sigma: no residual is given back below FLOOR, all of it from FLOOR + RAMP on.
FLOOR = 2.0
RAMP = 2.0
THICK_AXIS = 1.5  # an axis whose voxels are this many times the finest is not averaged along


def local_mean_kernel(spacing_zyx) -> tuple[int, int, int]:
    """The neighbourhood of a local mean: 3 voxels along each axis, 1 along an axis whose voxels
    are over THICK_AXIS times the finest.

    >>> local_mean_kernel((1.0, 1.0, 1.0)), local_mean_kernel((6.0, 1.0, 1.0))
    ((3, 3, 3), (1, 3, 3))
    """
    finest = min(spacing_zyx)
    return tuple(3 if spacing <= THICK_AXIS * finest else 1 for spacing in spacing_zyx)


def restore_local_means(noisy: np.ndarray, denoised: np.ndarray, sigma: float, spacing_zyx) -> np.ndarray:
    """``denoised`` plus the 3x3x3 mean of ``noisy - denoised``, faded out in the dark (and, for
    a magnitude image, never below zero)."""
    size = local_mean_kernel(spacing_zyx)
    lost = ndimage.uniform_filter(np.subtract(noisy, denoised, dtype=np.float32), size=size, mode="nearest")
    bright = np.clip((denoised / np.float32(sigma) - FLOOR) / RAMP, 0, 1)
    restored = (denoised + bright * lost).astype(np.float32)
    return np.maximum(restored, 0, out=restored) if noisy.min() >= 0 else restored
