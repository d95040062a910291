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


RESIDUAL_WINDOW_SIGMA = 1.0


def residual_gradient_correlation(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray,
                                  mask: np.ndarray) -> float:
    """How much anatomy a denoiser removed: Pearson correlation, inside ``mask``, of the residual's
    local energy with the clean image's gradient magnitude, minus the same for the true noise.

    The residual is ``noisy - denoised``; its local energy is ``r**2`` averaged by a Gaussian of
    ``RESIDUAL_WINDOW_SIGMA`` voxels, and the gradient magnitude is that of the clean image at
    the same scale. Removed anatomy is concentrated at edges (blurring takes the most where the
    gradient is high), so it makes the residual's energy follow the gradient; pure noise
    does not. The energy is used rather than the signed residual because blurring leaves
    residuals of both signs on either side of an edge, which cancel in a signed correlation.

    The true noise ``noisy - clean`` is what a perfect denoiser leaves, and its energy is not
    exactly flat: Rician noise has twice the energy over dark voxels (air, CSF in T1) that it
    has over tissue, and dark regions border edges. That baseline correlation is subtracted, so
    the measure is exactly 0 for pure noise removal (``denoised == clean``), positive when
    the residual holds anatomy, and negative when the residual follows edges less than the true
    noise does (a method that leaves some noise in place at edges, or the Rician offset in dark
    regions next to them). A residual of
    zero (a method that does nothing) has no energy to correlate: its raw correlation counts as
    0, so it scores minus the baseline.

    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> clean = np.zeros((40, 40, 40)); clean[10:30, 10:30, 10:30] = 100.0
    >>> noisy = clean + rng.normal(0, 5, clean.shape)
    >>> mask = np.ones(clean.shape, bool)
    >>> residual_gradient_correlation(clean, noisy, clean, mask)
    0.0
    >>> blurred = ndimage.gaussian_filter(noisy, 2.0)
    >>> residual_gradient_correlation(clean, noisy, blurred, mask) > 0.5
    True
    """
    clean = np.asarray(clean, dtype=np.float64)
    noisy = np.asarray(noisy, dtype=np.float64)
    gradient = ndimage.gaussian_gradient_magnitude(clean, RESIDUAL_WINDOW_SIGMA)[mask]

    def energy_correlation(residual: np.ndarray) -> float:
        energy = ndimage.gaussian_filter(residual**2, RESIDUAL_WINDOW_SIGMA)[mask]
        if energy.std() == 0 or gradient.std() == 0:
            return 0.0
        return float(np.corrcoef(energy, gradient)[0, 1])

    baseline = energy_correlation(noisy - clean)
    return energy_correlation(noisy - np.asarray(denoised, dtype=np.float64)) - baseline
