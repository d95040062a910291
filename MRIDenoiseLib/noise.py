"""Rician noise: simulate it the way a scanner makes it, and estimate its sigma from one image.

Magnitude MRI noise is Rician: a Gaussian of the same sigma on the real and imaginary channels,
then the magnitude. The estimator measures sigma on the tissue, where the signal is high enough
that the noise is close to Gaussian, with a third-order difference (the finest 3-D Haar wavelet
detail, HHH) that cancels smooth anatomy and leaves the noise; its median absolute value gives a
robust sigma (Donoho's estimator) that edges cannot drag up.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> clean = np.full((40, 40, 40), 100.0)
>>> noisy = add_rician_noise(clean, 5.0, rng)
>>> abs(estimate_sigma(noisy) / 5.0 - 1) < 0.05
True
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

GAUSSIAN_MAD = 0.6744897501960817
# Below this signal-to-noise ratio the magnitude is visibly non-Gaussian, which biases the MAD.
MIN_TISSUE_SNR = 4.0


def add_rician_noise(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Return ``|image + n1 + i n2|`` with ``n1, n2 ~ N(0, sigma)``, as float32."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imaginary = rng.normal(0.0, sigma, image.shape)
    return np.hypot(real, imaginary).astype(np.float32)


def _haar_detail(image: np.ndarray) -> np.ndarray:
    """Finest diagonal Haar detail along every axis; unit gain for white noise."""
    detail = image.astype(np.float64)
    for axis in range(detail.ndim):
        if detail.shape[axis] < 2:
            continue
        detail = np.diff(detail, axis=axis) / np.sqrt(2.0)
    return detail


def _mad_sigma(image: np.ndarray, mask: np.ndarray) -> float:
    detail = _haar_detail(image)
    inner = mask[tuple(slice(0, n) for n in detail.shape)]
    values = np.abs(detail[inner])
    if values.size == 0:
        return 0.0
    return float(np.median(values) / GAUSSIAN_MAD)


def estimate_sigma(image: np.ndarray) -> float:
    """Estimate the Rician sigma of a magnitude image, in the image's own units.

    Tissue is taken as voxels whose local mean is well above both the background and the noise;
    the estimate is refined twice as the tissue mask tightens.
    """
    image = np.asarray(image, dtype=np.float64)
    smooth = ndimage.uniform_filter(image, size=3)
    positive = smooth[smooth > 0]
    if positive.size == 0:
        return 0.0
    mask = smooth > np.percentile(positive, 25)
    sigma = _mad_sigma(image, mask)
    for _ in range(2):
        tissue = smooth > max(MIN_TISSUE_SNR * sigma, np.percentile(positive, 25))
        if tissue.sum() < 1000:
            break
        sigma = _mad_sigma(image, tissue)
    return sigma
