"""Image-quality metrics by the usual denoising protocol: PSNR and 3-D SSIM over the head.

PSNR's peak is the maximum of the reference; SSIM uses a Gaussian window (sigma 1.5 voxels) and
the reference's range, and is averaged over the mask.

>>> import numpy as np
>>> reference = np.zeros((20, 20, 20)); reference[5:15, 5:15, 5:15] = 100.0
>>> mask = reference > 0
>>> round(psnr(reference, reference + 1.0, mask), 1)
40.0
>>> round(ssim(reference, reference, mask), 3)
1.0
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SSIM_WINDOW_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def psnr(reference: np.ndarray, result: np.ndarray, mask: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB inside ``mask``; peak is ``reference.max()``."""
    reference = np.asarray(reference, dtype=np.float64)
    error = reference[mask] - np.asarray(result, dtype=np.float64)[mask]
    mse = float(np.mean(error**2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(reference.max() ** 2 / mse))


def ssim(reference: np.ndarray, result: np.ndarray, mask: np.ndarray) -> float:
    """Mean 3-D structural similarity inside ``mask``."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(result, dtype=np.float64)
    data_range = float(x.max() - x.min()) or 1.0
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2

    def blur(volume: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(volume, SSIM_WINDOW_SIGMA, truncate=3.5)

    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x**2
    var_y = blur(y * y) - mean_y**2
    covariance = blur(x * y) - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(ssim_map[mask].mean())
