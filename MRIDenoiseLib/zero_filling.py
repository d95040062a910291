"""Zero-filled interpolation: noise that a scanner low-passed by reconstructing on a finer grid.

Many scanners sample k-space on a coarse grid and reconstruct on one twice as fine along some
axes (Siemens' "interpolation", GE's ZIP512 and ZIP2): the outer half of k-space along such an
axis is zero, for the anatomy and the noise alike. Neighbouring voxels' noise then correlates
(lag 1: 2/pi), and the finest-scale detail the noise estimate reads holds only
``sqrt(1 - 2/pi)``, about 0.60, of the noise's sigma along each such axis: about 0.36 where
both in-plane axes were interpolated, so the image would be denoised as if it were three times
cleaner than it is.

``zero_filled_axes`` finds such axes from the image alone: along each one, the power spectrum of
32-voxel segments that lie in bright tissue (Hann-windowed) is near zero past half Nyquist, far
below what the slope beneath it predicts. In the tissue the magnitude is close to the complex
image, so the cut shows there nearly whole; partial Fourier (one side of k-space zero-filled)
leaves at least a quarter of the power past it, and smooth anatomy a slope.
Every other voxel along a zero-filled axis is a sample as the scanner took it, with white noise
(or as low-passed as a k-space filter before the zero-filling left it): ``sampled_grids`` are
those interleaved grids, where ``noise.estimate_noise`` reads sigma, ``sampled_spacing`` their
voxel size. ``zero_filled_correlation`` is such noise's correlation between voxels on the whole
grid, from its correlation on theirs.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> box = np.zeros((64, 64, 64), np.float32)
>>> box[8:56, 8:56, 8:56] = 100
>>> white = box + rng.normal(size=box.shape).astype(np.float32)
>>> spectrum = np.fft.fft(white, axis=2)
>>> spectrum[:, :, 16:49] = 0  # the outer half of k-space along the last axis
>>> interpolated = np.real(np.fft.ifft(spectrum, axis=2)).astype(np.float32)
>>> zero_filled_axes(white), zero_filled_axes(interpolated)
((), (2,))
>>> noise = np.real(np.fft.ifft(np.fft.fft(white - box, axis=2) * (np.abs(np.fft.fftfreq(64)) < 0.25), axis=2))
>>> finest = np.diff(noise, axis=2).std() / np.sqrt(2) / noise.std()
>>> round(float(np.sqrt(1 - 2 / np.pi)), 3), bool(abs(finest - np.sqrt(1 - 2 / np.pi)) < 0.02)
(0.603, True)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft, ndimage

from .mask import otsu_threshold

SEGMENT = 32  # voxels: bins 0 to 16 of the spectrum, half Nyquist at bin 8
# Bands of the segments' spectrum (bins): well below the cut, just below it, and past it (Hann's
# main lobe reaches two bins either side: the power below the cut stays out of the last band).
LOWER, BELOW, PAST = (2, 5), (5, 8), (10, 14)
# The least drop, in natural log of power, from just below half Nyquist to past it, beyond what
# the slope beneath predicts. A cut on one side of k-space (partial Fourier) leaves at least a
# quarter of a real image's power past it (ln 4 = 1.39 at most); measured by
# `benchmarks/correlated_noise.py`: white Rician noise on the quality benchmark's cases and 188 raw
# scans 0.14 at most, partial Fourier 6/8 zero-filled on one side 1.06, images zero-filled 2x
# in-plane 2.53 and more (1 to 15% noise).
MIN_STEP = 1.8
MIN_SEGMENTS = 64
LINES = 4096  # lines whose tissue segments are taken, at most: evenly spread over the volume


def tissue_segments(image: np.ndarray, inside: np.ndarray, axis: int) -> np.ndarray:
    """Segments of SEGMENT voxels along ``axis`` (half a segment apart) that lie wholly ``inside``,
    from up to LINES lines evenly spread over the volume, as rows."""
    lines, mask = np.moveaxis(image, axis, -1), np.moveaxis(inside, axis, -1)
    count = lines.shape[0] * lines.shape[1]
    picked = np.unravel_index(np.arange(0, count, max(1, count // LINES)), lines.shape[:2])
    windows = sliding_window_view(lines[picked], SEGMENT, axis=1)[:, :: SEGMENT // 2]
    whole = sliding_window_view(mask[picked], SEGMENT, axis=1)[:, :: SEGMENT // 2].all(axis=-1)
    return windows[whole]


def segments_step(segments: np.ndarray) -> float:
    """How far (natural log) the segments' mean power spectrum falls from just below half Nyquist
    to past it, beyond the slope from the band beneath (0 or less where it does not)."""
    centred = segments - segments.mean(axis=1, keepdims=True)
    power = (np.abs(fft.rfft(centred * np.hanning(SEGMENT).astype(np.float32), axis=1)) ** 2).mean(axis=0)
    lower, below, past = (float(np.log(np.median(power[start:stop]) + 1e-30)) for start, stop in (LOWER, BELOW, PAST))
    slope = max(lower - below, 0.0) / (np.mean(BELOW) - np.mean(LOWER))  # per bin
    return below - past - slope * (np.mean(PAST) - np.mean(BELOW))


def half_nyquist_steps(image: np.ndarray, smooth: np.ndarray | None = None) -> dict[int, float]:
    """``segments_step`` along each axis that holds MIN_SEGMENTS segments in the tissue (above
    Otsu's threshold of ``smooth``, the image's 3x3x3 mean, computed here where not given)."""
    image = np.asarray(image, dtype=np.float32)
    if smooth is None:
        smooth = ndimage.uniform_filter(image, size=3)
    if smooth.max() <= smooth.min():
        return {}
    inside = smooth > otsu_threshold(smooth[::2, ::2, ::2].ravel())
    steps = {}
    for axis, length in enumerate(image.shape):
        segments = tissue_segments(image, inside, axis) if length >= SEGMENT else ()
        if len(segments) >= MIN_SEGMENTS:
            steps[axis] = segments_step(segments)
    return steps


def zero_filled_axes(image: np.ndarray, smooth: np.ndarray | None = None) -> tuple[int, ...]:
    """The axes along which ``image`` looks interpolated 2x by zero-filling its k-space
    (``half_nyquist_steps`` above MIN_STEP)."""
    return tuple(axis for axis, step in half_nyquist_steps(image, smooth).items() if step > MIN_STEP)


def zero_filled_correlation(axes: tuple[int, ...], length: int, sampled: np.ndarray | None = None) -> list[np.ndarray]:
    """Per NumPy axis, the noise's correlation at lags 0 to ``length`` - 1 once it is zero-filled
    2x along ``axes``, given its correlation on the grids it was sampled on (``sampled``: per
    axis, lags 0 to ``length`` - 1; None: white, as the scanner took it unfiltered). Along a
    zero-filled axis the noise is band-limited to half Nyquist, so its correlation is the grid's
    at even lags and their band-limited interpolation between (sinc((lag - 2k) / 2) over the
    grid's lags k; white on the grid: sinc(lag / 2)); along the others it is the grid's. The
    grouped step spreads it over a window's DCT frequencies (``block_matching.dct_noise_shares``).

    >>> [np.round(axis, 3).tolist() for axis in zero_filled_correlation((1,), 3)]
    [[1.0, 0.0, 0.0], [1.0, 0.637, 0.0], [1.0, 0.0, 0.0]]
    >>> hamming = np.array([[1, 0, 0, 0], [1, 0, 0, 0], [1, 0.625, 0.133, 0]])  # a Hamming window on the grid
    >>> np.round(zero_filled_correlation((2,), 4, hamming)[2], 3).tolist()  # the whole grid's: 0.891 and 0.338
    [1.0, 0.891, 0.625, 0.338]
    """
    lags, grid_lags = np.arange(length), np.arange(1 - length, length)
    correlation = []
    for axis in range(3):
        on_grid = (lags == 0).astype(np.float64) if sampled is None else np.asarray(sampled[axis], np.float64)
        if axis in axes:
            on_grid = np.array([np.sum(on_grid[np.abs(grid_lags)] * np.sinc((lag - 2 * grid_lags) / 2)) for lag in lags])
        correlation.append(on_grid)
    return correlation


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
