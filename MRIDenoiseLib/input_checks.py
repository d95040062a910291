"""What input can be denoised, checked on arrays and shapes with NumPy alone.

Shared by the command (``io``, ``pipeline``) and Slicer's own process, which checks a volume node
before it starts the worker and imports neither SimpleITK nor SciPy.

>>> import numpy as np
>>> check_voxels(np.arange(8.0).reshape(2, 2, 2))
>>> check_voxels(np.full((2, 2, 2), 7.0), "flat")
Traceback (most recent call last):
...
MRIDenoiseLib.input_checks.InputError: flat: every voxel has the same value (7.0); nothing to denoise
"""

from __future__ import annotations

import numpy as np

# Interpolation rings a little below zero; more than this share of the maximum means the image is
# not a magnitude image, whose noise model (Rician) the denoiser assumes.
NEGATIVE_TOLERANCE = 0.05
# N4's B-spline field needs room along every axis: a 2-D slice makes it fail, and a few voxels
# make it scale the whole image (4x on a 3x3x3 volume).
N4_MIN_VOXELS = 8


class InputError(ValueError):
    """Input that cannot be denoised; the message is one line meant for the user."""


def check_voxels(array: np.ndarray, name: str = "input") -> None:
    """Refuse voxels that cannot be denoised: none, non-finite (also once in float32), constant, or signed."""
    if array.size == 0:
        raise InputError(f"{name}: is empty")
    if not np.isfinite(array).all() or float(np.abs(array).max()) > float(np.finfo(np.float32).max):
        raise InputError(f"{name}: holds NaN or infinite voxels (or values beyond 32-bit floats)")
    if array.max() == array.min():
        raise InputError(f"{name}: every voxel has the same value ({array.max()}); nothing to denoise")
    if array.min() < -NEGATIVE_TOLERANCE * float(array.max()):
        raise InputError(f"{name}: has voxels down to {array.min():.4g} ({(array < 0).mean():.1%} of them below 0); "
                         "a magnitude image (0 or above) is needed, not a signed, phase or z-scored one")


def can_correct_bias(shape: tuple[int, ...]) -> bool:
    """Whether N4 is fitted on a volume of this shape (every axis at least N4_MIN_VOXELS).

    >>> can_correct_bias((181, 217, 181)), can_correct_bias((1, 64, 64))
    (True, False)
    """
    return min(shape) >= N4_MIN_VOXELS
