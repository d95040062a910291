"""Head masks: Otsu's threshold on a smoothed copy, holes filled, largest component kept.

Used for the metric protocol (PSNR and SSIM over the head), for N4's fit and for sampling
training patches inside the head.

>>> import numpy as np
>>> image = np.zeros((30, 30, 30)); image[5:25, 5:25, 5:25] = 100.0
>>> mask = head_mask(image)
>>> bool(mask[15, 15, 15]), bool(mask[0, 0, 0])
(True, False)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a set of values (maximum between-class variance)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[np.argmax(between)])


def head_mask(image: np.ndarray, smoothing_voxels: float = 1.0) -> np.ndarray:
    """Boolean mask of the head (or whatever bright object the image holds)."""
    smooth = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), smoothing_voxels)
    if smooth.max() <= smooth.min():
        return np.zeros(smooth.shape, dtype=bool)
    mask = smooth > otsu_threshold(smooth.ravel()) / 2
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    for axis in range(mask.ndim):
        mask = _fill_holes_per_slice(mask, axis)
    return ndimage.binary_fill_holes(mask)


def _fill_holes_per_slice(mask: np.ndarray, axis: int) -> np.ndarray:
    """Fill holes slice by slice, which closes ventricles that touch a cut surface in 3-D."""
    moved = np.moveaxis(mask, axis, 0)
    filled = np.stack([ndimage.binary_fill_holes(plane) for plane in moved])
    return np.moveaxis(filled, 0, axis)
