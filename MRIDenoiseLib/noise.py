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

import functools
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage, special

from .zero_filling import sampled_grids, zero_filled_axes

GAUSSIAN_MAD = 0.6744897501960817
# Below this signal-to-noise ratio the magnitude is visibly non-Gaussian, which biases the MAD.
MIN_TISSUE_SNR = 4.0
BLOCK = 6
MIN_BLOCK_SNR = 3.0
# A low percentile, because blocks that hold anatomy only ever add detail energy; with 6-cubed
# blocks the spread of pure-noise blocks is small enough that the 2nd percentile is still stable.
BLOCK_PERCENTILE = 2
MIN_BLOCKS = 20
# The first, median-based estimate of a volume above this many voxels is taken over an even
# sample (every k-th voxel along each axis; a 1 mm brain every other, a 512³ volume every
# fourth): it only sets the tissue thresholds of the block estimate, which sees every voxel. On
# the 48 volumes of the quality benchmark sigma moved by 3e-5 at most (one volume), while the
# estimate of a 1 mm brain takes half the time and that of a 512³ volume about 8 s instead of 14.
SAMPLED_ABOVE = 1 << 21
# The fourth difference along each axis (binomial weights 1 -4 6 -4 1, unit gain for white noise)
# cancels smooth anatomy far better than the Haar detail's first difference. Where the Haar
# estimate is over ANATOMY_RATIO[0] times the fourth difference's (all the way from
# ANATOMY_RATIO[1]), the finest detail holds more than white noise: anatomy, or noise low-passed
# between voxels. On the 48 volumes of the quality benchmark the ratio is at most 1.06, on the
# 185 IXI T1 scans as they are 1.19 (``benchmarks/anatomy_ratio.py``); on Colin27 averaged to
# 4 x 4 x 8 mm at 0.5% noise 1.6-1.8 (``benchmarks/coarse_low_noise.py``), 1.45 on nibabel's
# real EPI, and 1.7-3.9 with noise low-passed in k-space by the Fermi, Hamming or Hann windows
# scanners apply. What tells the two apart is how unevenly the Haar detail fills the blocks: the
# 25th percentile of the blocks' RMS over their 2nd (BLOCK_PERCENTILE) is 1.13 in white noise
# and 1.13-1.24 in low-passed noise, stationary both, and 1.19-2.5 where anatomy fills the
# detail. Anatomy moves sigma toward the fourth difference's estimate (the Haar one is 1.5-5.4
# times the truth there, the fourth difference's less), weighted by ANATOMY_SPREAD's ramp, but
# not past a ratio of ANATOMY_CEILING: anatomy keeps it below about 1.8, while noise the Haar
# detail barely sees takes it higher (zero-filled noise the detection missed: 2.2 and 4.3, the
# Haar estimate 0.43 of the truth, its detail mostly anatomy).
# Low-passed noise, of which the Haar detail sees only 0.33-0.79, moves it toward what detrended
# blocks read (``_detrended_sigma``), as far as the spread says noise (past ANATOMY_CEILING
# whatever the spread: strongly low-passed noise, a radial Fermi window at 0.3 cycles per voxel,
# fills the blocks as unevenly as anatomy, 1.25-1.32, as each holds fewer independent values of
# it) and as far as that reading holds from 6- to 8-cubed blocks (``DETRENDED_GROWTH``).
FOURTH_DIFFERENCE = np.array([1, -4, 6, -4, 1], dtype=np.float32) / np.float32(np.sqrt(70.0))
ANATOMY_RATIO = (1.2, 1.4)
ANATOMY_SPREAD = (1.2, 1.3)
ANATOMY_CEILING = (1.9, 2.1)
# Each voxel's sigma, whatever low-pass window made the noise: the 2nd percentile of the RMS of
# tissue blocks less their mean and linear trend (chi-square with size³ - 4 degrees of freedom in
# white noise). With 8-cubed blocks it reads 1.04-1.13 of the sigma on 1 mm and 2 mm brains with
# white or Fermi-, Hamming- or Hann-windowed noise (the flattest tissue's texture adds a little;
# in pure windowed noise 0.98, 0.95 and 0.93: a block holds fewer independent values of it).
# Where anatomy fills the blocks it reads 2-16 times the sigma, and grows with the block: from 6
# to 8 voxels by 1.03-1.07 in white and windowed noise, by 1.26-1.30 on coarse T1 scans whose
# spread looks like noise. Above DETRENDED_GROWTH[0] its weight falls, to none at [1].
DETRENDED_BLOCKS = (6, 8)
DETRENDED_GROWTH = (1.1, 1.2)
# The detrended reading with each of DETRENDED_BLOCKS (None where too few blocks are tissue).
Readings = tuple[float | None, float | None]
# Tissue blocks as rows, and the RMS of each less its mean and linear trend (``_detrended_blocks``).
DetrendedBlocks = tuple[np.ndarray, np.ndarray]
# Where sigma was raised (or a known sigma is above the Haar detail's, ``estimate_noise``), the
# noise's correlation along each axis at lags 0 to CORRELATION_LAGS - 1 (the grouped step's
# windows, ``dct_wiener.BLOCK``, span 4 voxels) is read from the flattest detrended 8-cubed blocks
# (those at or below their BLOCK_PERCENTILE RMS, at least MIN_BLOCKS), so that the step can tell
# each window frequency's noise apart (``block_matching.dct_noise_shares``).
# Under in-plane Fermi, Hamming and Hann windows (``benchmarks/filtered_noise.py``) the shares it
# gives are within 0.1 of the window's own at every frequency on Colin27 at 1 mm.
CORRELATION_LAGS = 4  # dct_wiener.BLOCK, which Testing/test_noise.py checks (noise stays free of torch)
WHITE_CORRELATION = np.eye(1, CORRELATION_LAGS)
# BLOCK_PERCENTILE's block RMS fourth difference over sigma in white noise: 0.6994 (standard error
# 0.0003) over 20 draws of 190-cubed Gaussian noise. The chi-square of ``block_percentile_gain``
# would say 0.662: its correlations reach four voxels, where the approximation is 5% off.
FOURTH_DIFFERENCE_GAIN = 0.6994


def add_rician_noise(image: np.ndarray, sigma: float | np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return ``|image + n1 + i n2|`` with ``n1, n2 ~ N(0, sigma)``, as float32; ``sigma`` may be an
    array that broadcasts to the image's shape (a noise level that varies across it)."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imaginary = rng.normal(0.0, sigma, image.shape)
    return np.hypot(real, imaginary).astype(np.float32)


def _haar_detail(image: np.ndarray) -> np.ndarray:
    """Finest diagonal Haar detail along every axis; unit gain for white noise."""
    detail = image
    for axis in range(detail.ndim):
        if detail.shape[axis] < 2:
            continue
        detail = np.diff(detail, axis=axis) / np.float32(np.sqrt(2.0))
    return np.abs(detail)


def _blocks(volume: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping ``size``-cubed blocks of a 3-D volume as rows (edges that do not fill a block dropped)."""
    counts = [n // size for n in volume.shape]
    trimmed = volume[tuple(slice(0, c * size) for c in counts)]
    shaped = trimmed.reshape(counts[0], size, counts[1], size, counts[2], size)
    return shaped.transpose(0, 2, 4, 1, 3, 5).reshape(-1, size**3)


def _tissue_blocks(smooth: np.ndarray, size: int, threshold: float) -> np.ndarray | None:
    """Which ``size``-cubed blocks (``_blocks``) have their darkest 3x3x3 mean (``smooth``) above
    ``threshold``; None where fewer than ``MIN_BLOCKS`` do."""
    tissue = _blocks(smooth, size).min(axis=1) > threshold
    return tissue if tissue.sum() >= MIN_BLOCKS else None


def block_percentile_gain(size: int, percentile: float) -> float:
    """Expected ratio of the given percentile of block RMS details to sigma, in pure white noise.

    Neighbouring Haar details share a voxel, so along each axis they correlate with -1/2; a block
    of ``size**3`` of them therefore fluctuates like a chi-square with fewer degrees of freedom
    (Satterthwaite: ``n / prod(sum of squared correlations per row)``). Ignoring this
    under-corrects the low percentile and biases sigma low by about 5%.
    """
    per_axis = (3 * size - 1) / (2 * size)
    dof = size**3 / per_axis**3
    # The chi-square quantile, 2 P^-1(dof/2, p): scipy.special comes with ndimage, while
    # scipy.stats would add a quarter of a second to every command's start.
    return float(np.sqrt(2 * special.gammaincinv(dof / 2, percentile / 100) / dof))


def _tissue_mad_sigma(level: np.ndarray, floor: float, deviations: Callable[[np.ndarray], np.ndarray]) -> float:
    """Sigma as the median of ``deviations(tissue)`` (absolute noise samples at the voxels of a
    mask) over 0.6745, first where ``level`` is above ``floor``, then twice more as the tissue
    tightens to ``MIN_TISSUE_SNR`` sigma, while it holds 1000 voxels or more."""
    tissue = level > floor
    if not tissue.any():
        return 0.0
    sigma = float(np.median(deviations(tissue))) / GAUSSIAN_MAD
    for _ in range(2):
        tissue = level > max(MIN_TISSUE_SNR * sigma, floor)
        if tissue.sum() < 1000:
            break
        sigma = float(np.median(deviations(tissue))) / GAUSSIAN_MAD
    return sigma


def even_sample(voxels: int, limit: int = SAMPLED_ABOVE) -> tuple[slice, slice, slice]:
    """Every k-th voxel along each axis, k the least that leaves at most ``limit`` of ``voxels``.

    >>> even_sample(120 * 120 * 120), even_sample(512 ** 3)[0]
    ((slice(None, None, 1), slice(None, None, 1), slice(None, None, 1)), slice(None, None, 4))
    """
    step = 1
    while voxels / step**3 > limit:
        step += 1
    return (slice(None, None, step),) * 3


@dataclass(frozen=True)
class NoiseBlocks:
    """The 6-cubed blocks (``BLOCK``) the estimate was refined on, in the image's voxel grid:
    each one's RMS Haar detail, darkest and mean 3x3x3-smoothed intensity, and centre (voxels
    from the volume's corner; ``shape``: the volume's)."""

    rms: np.ndarray
    darkest: np.ndarray
    level: np.ndarray
    centres: np.ndarray
    shape: tuple[int, int, int]


@dataclass(frozen=True)
class NoiseEstimate:
    sigma: float
    blocks: NoiseBlocks | None  # None where the volume is thinner than a block
    zero_filled: tuple[int, ...] = ()  # axes along which the image looks interpolated 2x (``zero_filling``)
    # The estimates from the Haar detail (which ``blocks`` hold) and from the fourth difference,
    # where the latter was measured; ``sigma`` moves from the Haar one where they disagree
    # (``checked_sigma``). Where the image looks zero-filled, these, the spread, the detrended
    # readings and the correlation are a sampled grid's (``estimate_noise``); the blocks the image's.
    haar_sigma: float | None = None
    fourth_sigma: float | None = None
    spread: float | None = None  # the Haar blocks' 25th percentile RMS over their 2nd (``ANATOMY_SPREAD``)
    # ``_detrended_sigma`` with 6- and 8-cubed blocks, where the noise looked low-passed
    detrended_sigmas: Readings | None = None
    # Where the noise looked low-passed: per axis, its correlation at lags 0 to CORRELATION_LAGS - 1,
    # moved from white noise's as far as it looked so (the raise's weight, ``checked_sigma``; or
    # where sigma is known, ``estimate_noise``).
    correlation: np.ndarray | None = None

    @property
    def finest(self) -> float:
        """The sigma the Haar detail reads (of the image, or of its sampled grid where zero-filled)."""
        return self.sigma if self.haar_sigma is None else self.haar_sigma

    @property
    def lowered(self) -> bool:
        """Whether the fourth difference found anatomy and lowered sigma from the Haar detail's."""
        return self.haar_sigma is not None and self.sigma < self.haar_sigma

    @property
    def raised(self) -> bool:
        """Whether the noise looked low-passed and sigma was raised from the Haar detail's."""
        return self.haar_sigma is not None and self.sigma > self.haar_sigma


def _fourth_difference_sigma(image: np.ndarray, smooth: np.ndarray, threshold: float) -> float | None:
    """Sigma as the block estimate reads it from the fourth difference along every axis, over
    blocks whose darkest 3x3x3 mean is above ``threshold``; None where too few are (or an axis
    is too short).

    >>> rng = np.random.default_rng(0)
    >>> ramp = np.broadcast_to(np.linspace(50, 150, 60)[:, None, None], (60, 60, 60))
    >>> abs(_fourth_difference_sigma(add_rician_noise(ramp, 2.0, rng), ramp, 10.0) / 2.0 - 1) < 0.05
    True
    """
    if min(image.shape) < BLOCK + len(FOURTH_DIFFERENCE) - 1:
        return None
    detail = image
    for axis in range(3):
        detail = ndimage.correlate1d(detail, FOURTH_DIFFERENCE, axis=axis, mode="nearest")
    inside = (slice(2, -2),) * 3
    tissue = _tissue_blocks(smooth[inside], BLOCK, threshold)
    if tissue is None:
        return None
    rms = np.sqrt(_blocks(detail[inside] ** 2, BLOCK)[tissue].mean(axis=1))
    return float(np.percentile(rms, BLOCK_PERCENTILE)) / FOURTH_DIFFERENCE_GAIN


def _detrended_blocks(image: np.ndarray, smooth: np.ndarray, threshold: float,
                      size: int) -> DetrendedBlocks | None:
    """The ``size``-cubed blocks of ``image`` whose darkest 3x3x3 mean (``smooth``) is above
    ``threshold``, as rows, and the RMS of each less its mean and linear trend (per degree of
    freedom, size³ - 4); None where too few blocks are tissue. Both the detrended sigma and the
    noise's correlation are read from them."""
    tissue = _tissue_blocks(smooth, size, threshold)
    if tissue is None:
        return None
    values = _blocks(image, size)[tissue]
    slopes = _slopes(size)
    squares = np.empty(len(values))
    for start in range(0, len(values), 4096):  # in float64, a few MB at a time
        chunk = values[start:start + 4096].astype(np.float64)
        chunk -= chunk.mean(axis=1, keepdims=True)
        # the slopes are orthogonal to each other and to the mean: their energy comes off one by one
        squares[start:start + 4096] = (chunk**2).sum(axis=1) - ((chunk @ slopes.T) ** 2).sum(axis=1)
    return values, np.sqrt(np.maximum(squares, 0) / (size**3 - 4))


def _slopes(size: int) -> np.ndarray:
    """The linear trends along the three axes of a ``size``-cubed block, as unit rows."""
    centred = np.arange(size) - (size - 1) / 2
    slopes = np.stack([axis.ravel() for axis in np.meshgrid(centred, centred, centred, indexing="ij")])
    return slopes / np.linalg.norm(slopes, axis=1, keepdims=True)


def _detrended_sigma(found: DetrendedBlocks | None) -> float | None:
    """Each voxel's sigma from the 2nd percentile RMS of blocks less their mean and linear trend
    (``_detrended_blocks``); None where too few blocks were tissue (``found`` None).

    >>> rng = np.random.default_rng(0)
    >>> ramp = np.broadcast_to(np.linspace(50, 150, 64)[:, None, None], (64, 64, 64))
    >>> found = _detrended_blocks(add_rician_noise(ramp, 2.0, rng), ramp, 10.0, 8)
    >>> abs(_detrended_sigma(found) / 2.0 - 1) < 0.05
    True
    """
    if found is None:
        return None
    dof = found[0].shape[1] - 4
    gain = np.sqrt(2 * special.gammaincinv(dof / 2, BLOCK_PERCENTILE / 100) / dof)
    return float(np.percentile(found[1], BLOCK_PERCENTILE)) / float(gain)


def _noise_correlation(found: DetrendedBlocks | None) -> np.ndarray | None:
    """Per axis, the noise's correlation at lags 0 to CORRELATION_LAGS - 1, over the flattest of
    the detrended tissue blocks (``_detrended_blocks``: at or below their BLOCK_PERCENTILE RMS, at
    least MIN_BLOCKS of them); None where too few blocks were tissue (``found`` None).

    >>> rng = np.random.default_rng(0)
    >>> ramp = np.broadcast_to(np.linspace(50, 150, 64)[:, None, None], (64, 64, 64))
    >>> noise = rng.normal(size=(2, 65, 64, 64)) * 2
    >>> noisy = np.hypot(ramp + (noise[0, 1:] + noise[0, :-1]) / np.sqrt(2), noise[1, 1:]).astype(np.float32)
    >>> found = _detrended_blocks(noisy, ramp, 10.0, 8)
    >>> (np.round(_noise_correlation(found), 1) + 0).tolist()  # a 2-tap average along the first axis
    [[1.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
    """
    if found is None:
        return None
    values, rms = found
    size = round(values.shape[1] ** (1 / 3))
    flattest = np.argsort(rms)[:max(MIN_BLOCKS, int(np.ceil(len(rms) * BLOCK_PERCENTILE / 100)))]
    residual = values[flattest].astype(np.float64)
    residual -= residual.mean(axis=1, keepdims=True)
    slopes = _slopes(size)
    residual -= (residual @ slopes.T) @ slopes
    residual = residual.reshape(-1, size, size, size)
    correlation = np.empty((3, CORRELATION_LAGS))
    for axis in range(3):
        along = np.moveaxis(residual, axis + 1, -1)
        power = np.mean(along**2)
        correlation[axis] = [np.mean(along[..., lag:] * along[..., :size - lag]) / power for lag in range(CORRELATION_LAGS)]
    return correlation


def _ramp(value: float, ends: tuple[float, float]) -> float:
    return float(np.clip((value - ends[0]) / (ends[1] - ends[0]), 0.0, 1.0))


def checked_sigma(haar: float, fourth: float | None, spread: float | None,
                  detrended: Callable[[], Readings]) -> tuple[float, Readings | None, float]:
    """Sigma from the Haar estimate, checked by the fourth difference's (their ratio ramped by
    ``ANATOMY_RATIO``) and the Haar blocks' ``spread`` (``ANATOMY_SPREAD``): moved toward
    ``fourth`` as far as the detail looks like anatomy (below a ratio of ``ANATOMY_CEILING``), and
    as far as it looks like low-passed noise (past that ratio, whatever the spread) toward the
    8-cubed detrended blocks' reading
    (``detrended()``: the 6- and 8-cubed readings, asked for only then; weighted down as the
    reading grows with the block, ``DETRENDED_GROWTH``; never below the Haar estimate);
    geometrically. Returns sigma, the detrended readings where they were asked for, and how far
    the noise looks low-passed (the raise's weight, 0 to 1; 0 where nothing was raised).

    >>> holds, grows = (lambda: (2.9, 3.0)), (lambda: (2.0, 3.0))
    >>> [round(checked_sigma(h, 1.0, 1.5, holds)[0], 3) for h in (1.1, 1.3, 1.8, 2.0, 2.5, 4.0)]
    [1.1, 1.14, 1.0, 1.732, 3.0, 4.0]
    >>> [tuple(round(value, 3) for value in checked_sigma(1.8, 1.0, spread, holds)[::2]) for spread in (1.15, 1.25)]
    [(3.0, 1.0), (1.732, 0.5)]
    >>> checked_sigma(1.8, 1.0, None, holds), checked_sigma(1.8, 1.0, 1.15, grows)
    ((1.8, None, 0.0), (1.8, (2.0, 3.0), 0.0))
    """
    if fourth is None or fourth <= 0 or spread is None:
        return haar, None, 0.0
    ratio = haar / fourth
    # No anatomy reads a ratio past the ceiling; strongly low-passed noise does, and fills the
    # blocks unevenly too (fewer independent values of it in each).
    differs, anatomy = _ramp(ratio, ANATOMY_RATIO), _ramp(spread, ANATOMY_SPREAD) * (1 - _ramp(ratio, ANATOMY_CEILING))
    sigma = haar * (fourth / haar) ** (differs * anatomy)
    if differs == 0 or anatomy == 1:
        return sigma, None, 0.0
    readings = detrended()
    smaller, larger = readings
    if not smaller or not larger or larger <= haar:
        return sigma, readings, 0.0
    low_passed = differs * (1 - anatomy) * (1 - _ramp(larger / smaller, DETRENDED_GROWTH))
    return sigma * (larger / haar) ** low_passed, readings, low_passed


def estimate_sigma(image: np.ndarray) -> float:
    """Estimate the Rician sigma of a magnitude image, in the image's own units
    (``estimate_noise``'s sigma).
    """
    return estimate_noise(image).sigma


def estimate_noise(image: np.ndarray, known_sigma: float | None = None) -> NoiseEstimate:
    """Estimate the Rician sigma of a magnitude image, in the image's own units, with the blocks
    it was refined on (``noise_field`` fits a noise level that varies across the image to them).

    A first estimate is the MAD of the Haar detail over tissue (twice refined as the tissue mask
    tightens).
    It is then refined on small blocks of tissue well above the noise: each block gives an RMS
    estimate, and a low percentile of them (corrected for its expected offset in pure noise) is
    taken, because blocks that hold anatomy only ever add to the detail energy. With synthetic
    noise on real T1 brains it is within 10% from 1% to 9% noise (within 2% from 3% up).

    Limit: it assumes the finest-scale detail of the tissue is mostly noise. At coarse voxels and
    low noise much of it is anatomy; so is about 90% of that detail's energy on nibabel's real
    2 mm EPI pair (``example4d``, structure common to both time points), whose scanner noise is
    also low-passed in-plane (lag-1 correlation 0.18 and 0.33). The same block estimate on the
    fourth difference along each axis, which cancels smooth anatomy far better, tells such
    images: where the two disagree (``ANATOMY_RATIO``) and the Haar detail fills the blocks
    unevenly, as anatomy does and stationary noise does not (``ANATOMY_SPREAD``), sigma moves
    toward the lower, the fourth difference's (``NoiseEstimate.lowered``). On ``example4d`` that
    takes the estimate from 1.46 to 1.01 times the two volumes' difference's standard deviation
    over the square root of 2 (1.57 to 1.09 times ``estimate_sigma_from_series``, a MAD of it).
    Noise low-passed between voxels (k-space windows) also makes them disagree, but fills the
    blocks evenly; the Haar detail then reads only 0.35-0.79 of its sigma
    (``benchmarks/filtered_noise.py``), and sigma moves toward what detrended blocks read, where
    that reading holds from 6- to 8-cubed blocks (``NoiseEstimate.raised``).

    Where the image looks zero-filled 2x along some axes (``zero_filling``), all of this runs on
    the first grid it was sampled on (every other voxel along those axes), where such noise is
    white and each voxel's sigma the same (the blocks, for the noise map, are the whole image's). A
    k-space window that cuts near half Nyquist, which the detection also takes for zero-filling,
    leaves that grid's noise low-passed or aliased: the check then raises sigma there as it
    would on any low-passed noise (``benchmarks/correlated_noise.py``).

    ``known_sigma``: the noise level where the caller knows it (``--sigma``). The noise's
    correlation (``NoiseEstimate.correlation``) is then read as far as the Haar detail sees less
    than that level (their ratio ramped by ``ANATOMY_RATIO``), whatever the check made of sigma:
    only low-passed noise hides from the detail so (anatomy only ever adds to it).
    """
    image = np.asarray(image, dtype=np.float32)
    whole_smooth = ndimage.uniform_filter(image, size=3)
    zero_filled = zero_filled_axes(image, whole_smooth)
    if not zero_filled:
        return _estimate_as_sampled(image, whole_smooth, known_sigma)
    sampled = np.ascontiguousarray(image[sampled_grids(zero_filled)[0]])
    found = _estimate_as_sampled(sampled, ndimage.uniform_filter(sampled, size=3), known_sigma)
    if found.blocks is None:
        return replace(found, zero_filled=zero_filled)
    # The noise map is relative: it fits the whole image's blocks (on the grid's blocks it
    # followed a g-factor-like ramp less closely), tissue told by the grid's sigma.
    return replace(found, blocks=_noise_blocks(_haar_detail(image), whole_smooth, image.shape), zero_filled=zero_filled)


def _noise_blocks(detail: np.ndarray, smooth: np.ndarray, shape: tuple[int, int, int]) -> NoiseBlocks:
    """The ``BLOCK``-cubed blocks of the Haar ``detail`` of an image of ``shape`` whose 3x3x3
    mean is ``smooth`` (cut to the detail's shape)."""
    rms = np.sqrt(_blocks(detail**2, BLOCK).mean(axis=1))
    smooth_blocks = _blocks(smooth[tuple(slice(0, n) for n in detail.shape)], BLOCK)
    counts = [n // BLOCK for n in detail.shape]
    centres = np.stack(np.meshgrid(*[(np.arange(c) + 0.5) * BLOCK for c in counts], indexing="ij"), -1).reshape(-1, 3)
    return NoiseBlocks(rms, smooth_blocks.min(axis=1), smooth_blocks.mean(axis=1), centres, shape)


def _estimate_as_sampled(image: np.ndarray, whole_smooth: np.ndarray, known_sigma: float | None) -> NoiseEstimate:
    """``estimate_noise`` of an image on the grid it was sampled on (not zero-filled), given its
    3x3x3 mean ``whole_smooth``."""
    detail = _haar_detail(image)
    smooth = whole_smooth[tuple(slice(0, n) for n in detail.shape)]
    every = even_sample(detail.size, SAMPLED_ABOVE)
    sampled_smooth, sampled_detail = smooth[every], detail[every]
    positive = sampled_smooth[sampled_smooth > 0]
    if positive.size == 0:
        return NoiseEstimate(0.0, None)
    floor = float(np.percentile(positive, 25))
    sigma = _tissue_mad_sigma(sampled_smooth, floor, lambda tissue: sampled_detail[tissue])
    if min(detail.shape) < BLOCK:
        return NoiseEstimate(sigma, None)
    blocks = _noise_blocks(detail, smooth, image.shape)
    rms, darkest = blocks.rms, blocks.darkest
    offset = block_percentile_gain(BLOCK, BLOCK_PERCENTILE)
    used = None
    for _ in range(3):
        tissue = darkest > max(MIN_BLOCK_SNR * sigma, floor)
        if tissue.sum() < MIN_BLOCKS:
            break
        sigma, used = float(np.percentile(rms[tissue], BLOCK_PERCENTILE)) / offset, tissue
    if used is None or sigma <= 0:  # a noise-free image has nothing to check
        return NoiseEstimate(sigma, blocks)
    del detail, smooth
    spread = float(np.percentile(rms[used], 25)) / (sigma * offset)
    threshold = max(MIN_BLOCK_SNR * sigma, floor)
    fourth = _fourth_difference_sigma(image, whole_smooth, threshold)
    # Detrended once per block size: the raise reads sigma from them, the correlation the 8-cubed.
    detrended = functools.cache(lambda size: _detrended_blocks(image, whole_smooth, threshold, size))
    checked, readings, low_passed = checked_sigma(
        sigma, fourth, spread, lambda: tuple(_detrended_sigma(detrended(size)) for size in DETRENDED_BLOCKS))
    if known_sigma is not None:
        low_passed = _ramp(known_sigma / sigma, ANATOMY_RATIO)
    correlation = _noise_correlation(detrended(DETRENDED_BLOCKS[-1])) if low_passed > 0 else None
    if correlation is not None:  # as far as the noise looks low-passed
        correlation = WHITE_CORRELATION + low_passed * (correlation - WHITE_CORRELATION)
    return NoiseEstimate(checked, blocks, haar_sigma=sigma, fourth_sigma=fourth, spread=spread,
                         detrended_sigmas=readings, correlation=correlation)


SERIES_PAIRS = 8  # consecutive differences used around the chosen volume: enough voxels, little drift


def estimate_sigma_from_series(series: np.ndarray, index: int) -> float | None:
    """Rician sigma from the differences between consecutive volumes of a 4-D series (t, z, y, x)
    around volume ``index``, in the tissue; None for a single volume.

    Repeated acquisitions (fMRI, repeated b=0 volumes) differ by noise, and by what moved or
    changed in between, never by the anatomy that inflates a single volume's estimate at coarse
    voxels. Where the tissue's magnitude is well above the noise, the difference of two volumes
    is Gaussian with variance 2 sigma², so its MAD gives sigma robustly.

    >>> rng = np.random.default_rng(0)
    >>> series = np.stack([add_rician_noise(np.full((20, 20, 20), 100.0), 5.0, rng) for _ in range(4)])
    >>> abs(estimate_sigma_from_series(series, 1) / 5.0 - 1) < 0.05
    True
    """
    if series.shape[0] < 2:
        return None
    first = max(0, min(index - SERIES_PAIRS // 2, series.shape[0] - 1 - SERIES_PAIRS))
    volumes = np.asarray(series[first : first + SERIES_PAIRS + 1], dtype=np.float32)
    mean = volumes.mean(axis=0)
    floor = float(np.percentile(mean[mean > 0], 25)) if (mean > 0).any() else 0.0
    # A difference of two volumes carries the noise twice (variance 2 sigma²); its median is
    # taken out, as drift between the volumes would shift it.
    differences = np.diff(volumes, axis=0) / np.float32(np.sqrt(2.0))

    def deviations(tissue: np.ndarray) -> np.ndarray:
        values = differences[:, tissue]
        return np.abs(values - np.median(values))

    return _tissue_mad_sigma(mean, floor, deviations)


@dataclass(frozen=True)
class SeriesSigma:
    """A volume's noise sigma estimated from the volume alone and from its series' differences.

    Each can only be inflated (by anatomy at the finest scale; by motion, drift or a diffusion
    series' changing contrast), so ``sigma`` is the lower.
    """

    alone: float
    from_series: float | None

    @property
    def sigma(self) -> float:
        return self.alone if self.from_series is None else min(self.alone, self.from_series)


def estimate_sigma_in_series(series: np.ndarray, index: int) -> SeriesSigma:
    """Both estimates for volume ``index`` of a 4-D series (t, z, y, x)."""
    return SeriesSigma(estimate_sigma(series[index]), estimate_sigma_from_series(series, index))
