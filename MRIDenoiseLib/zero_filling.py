"""Zero-filled interpolation: noise that a scanner low-passed by reconstructing on a finer grid.

Many scanners sample k-space on a coarse grid and reconstruct on one twice as fine along some
axes (Siemens' "interpolation", GE's ZIP512 and ZIP2): the outer half of k-space along such an
axis is zero, for the anatomy and the noise alike. Neighbouring voxels' noise then correlates
(lag 1: 2/pi), and the finest-scale detail the noise estimate reads holds only
``sqrt(1 - 2/pi)``, about 0.60, of the noise's sigma along each such axis: about 0.36 where
both in-plane axes were interpolated, so the image would be denoised as if it were three times
cleaner than it is.

``zero_filled_axes`` finds such axes from the image alone: along each one, the power spectrum
(averaged over the lines along it) falls by a step at half the Nyquist frequency that the slope
beside it does not explain. ``zero_filled_gain`` is what the finest detail keeps of the sigma.
Every other voxel along such an axis is a sample as the scanner took it, with white noise:
``sampled_grids`` are those interleaved grids, ``sampled_spacing`` their voxel size.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> white = rng.normal(size=(64, 64, 64)).astype(np.float32)
>>> spectrum = np.fft.fft(white, axis=2)
>>> spectrum[:, :, 16:49] = 0  # the outer half of k-space along the last axis
>>> interpolated = np.real(np.fft.ifft(spectrum, axis=2)).astype(np.float32)
>>> zero_filled_axes(white), zero_filled_axes(interpolated)
((), (2,))
>>> finest = np.diff(interpolated, axis=2).std() / np.sqrt(2) / interpolated.std()
>>> round(zero_filled_gain((2,)), 3), bool(abs(finest - zero_filled_gain((2,))) < 0.02)
(0.603, True)
"""

from __future__ import annotations

import numpy as np
from scipy import fft

# The least step, in natural log of power, at half Nyquist beyond the slope beside it
# (`benchmarks/zero_filled.py` measures it): white Rician noise on the quality benchmark's cases
# and the raw training scans stay below 0.4, nibabel's phantom EPI reaches 0.56; images
# zero-filled 2x in-plane have 0.87 and more up to 15% noise (the background's Rayleigh noise
# spreads power past the cut, more as the noise grows).
MIN_STEP = 0.7
MIN_LINE = 32  # shorter axes give too few frequencies to see a step
LINES = 4096  # lines whose spectra are averaged, at most


def _log_band(power: np.ndarray, start: int, stop: int) -> float:
    return float(np.log(np.median(power[start:stop]) + 1e-30))


def half_nyquist_step(power: np.ndarray) -> float:
    """How far (natural log) ``power`` (bins 0 to Nyquist of a line of ``2 * (len - 1)``) falls
    across half Nyquist beyond what the slopes on either side predict (0 where it does not)."""
    length = 2 * (power.size - 1)
    width = max(2, round(0.05 * length / 2))
    steps = []
    for cut in (length // 4 - 1, length // 4, length // 4 + 1):
        below = _log_band(power, cut - 1 - width, cut - 1)
        above = _log_band(power, cut + 1, cut + 1 + width)
        slope_below = _log_band(power, cut - 1 - 3 * width, cut - 1 - width) - below
        slope_above = above - _log_band(power, cut + 1 + width, cut + 1 + 3 * width)
        slope = max(0.5 * (slope_below + slope_above), 0.0)
        # The bands' centres are width + 2 bins apart, the slope bands' 2 * width.
        steps.append(below - above - slope * (width + 2) / (2 * width))
    return max(steps)


def axis_power(image: np.ndarray, axis: int) -> np.ndarray:
    """The power spectrum along ``axis``, averaged over the lines along it whose mean is at least
    the median line's (the head more than the background, whose magnitude, Rayleigh noise, spreads
    power past the cut), up to LINES of them, evenly spaced."""
    means = image.mean(axis=axis, dtype=np.float64)
    picked = np.flatnonzero(means >= np.median(means))
    picked = np.unravel_index(picked[:: max(1, picked.size // LINES)], means.shape)
    lines = np.moveaxis(image, axis, -1)[picked]
    centred = lines - means[picked][:, None].astype(np.float32)
    return (np.abs(fft.rfft(centred, axis=-1)) ** 2).mean(axis=0)


def zero_filled_axes(image: np.ndarray) -> tuple[int, ...]:
    """The axes along which ``image`` looks interpolated 2x by zero-filling its k-space."""
    return tuple(axis for axis, length in enumerate(image.shape)
                 if length >= MIN_LINE and half_nyquist_step(axis_power(image, axis)) > MIN_STEP)


def zero_filled_gain(axes: tuple[int, ...]) -> float:
    """What the finest Haar detail keeps of white noise's sigma once the noise is zero-filled 2x
    along ``axes``: ``sqrt(1 - 2/pi)`` per axis (the lag-1 correlation of noise band-limited to
    half Nyquist is ``sinc(1/2) = 2/pi``)."""
    return float(np.sqrt(1 - 2 / np.pi) ** len(axes))


def sampled_grids(axes: tuple[int, ...]) -> list[tuple[slice, slice, slice]]:
    """The ``2 ** len(axes)`` interleaved grids of every other voxel along ``axes`` (one grid, the
    whole volume, where there are none).

    >>> len(sampled_grids(())), len(sampled_grids((1, 2))), sampled_grids((2,))[1][2]
    (1, 4, slice(1, None, 2))
    """
    grids = [(slice(None),) * 3]
    for axis in axes:
        grids = [grid[:axis] + (slice(start, None, 2),) + grid[axis + 1:] for grid in grids for start in (0, 1)]
    return grids


def sampled_spacing(spacing_xyz: tuple[float, float, float], axes: tuple[int, ...]) -> tuple[float, float, float]:
    """The voxel size (x, y, z) of ``sampled_grids(axes)``: twice the image's along each of ``axes`` (NumPy's).

    >>> sampled_spacing((0.5, 0.5, 3.0), (1, 2))
    (1.0, 1.0, 3.0)
    """
    return tuple(size * 2 if 2 - index in axes else size for index, size in enumerate(spacing_xyz))
