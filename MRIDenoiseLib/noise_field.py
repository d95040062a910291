"""A noise level that varies across the image, as parallel imaging (SENSE, GRAPPA) and coil arrays
make it: a smooth field of the local sigma relative to its median in the tissue.

The denoising step assumes one sigma. Where the noise varies, dividing the image by this field
makes it uniform (a magnitude image scaled by a smooth positive field is Rician with the sigma
scaled alike), so the image is denoised divided by the field and multiplied back after.

The field is fitted to the same statistic ``noise.estimate_sigma`` takes its sigma from: the RMS
Haar detail of 6-cubed blocks of tissue. Anatomy only ever adds to a block's detail, so the
log of the local sigma is fitted as a low quantile of the blocks' log RMS (quantile regression
on a quadratic polynomial of the position), with a cubic in the blocks' log intensity beside it
to take up texture that goes with the tissue's brightness rather than with the place (the noise
of a magnitude image does not depend on the signal, well above sigma). Where the noise is low
against the anatomy's fine detail, the blocks' detail is anatomy and the fit follows it; the
fit's residuals then spread wider than a block's RMS does in pure noise, and the field is not used
(``NoiseField.follows_anatomy``).

>>> import numpy as np
>>> from MRIDenoiseLib.noise import add_rician_noise, estimate_noise
>>> ramp = np.linspace(0.6, 1.4, 56, dtype=np.float32)[:, None, None]
>>> noisy = add_rician_noise(np.full((56, 56, 56), 100.0), 5 * ramp, np.random.default_rng(0))
>>> estimate = estimate_noise(noisy)
>>> field = estimate_noise_field(estimate.blocks, estimate.sigma)
>>> field.varies, [round(float(f), 1) for f in field.on_grid(noisy.shape)[[3, 28, -4], 28, 28]]
(True, [0.7, 1.0, 1.4])
"""

from __future__ import annotations

import functools
import itertools
import operator
from dataclasses import dataclass

import numpy as np

from .noise import BLOCK, NoiseBlocks, block_percentile_gain

DEGREE = 2
# Blocks whose darkest 3x3x3 mean is this many sigma (the image's one estimate) above zero count
# as tissue. Lower than the estimate's own 3 (``noise.MIN_BLOCK_SNR``): where the noise is high,
# few blocks pass 3 times the lower level the estimate finds elsewhere (none of a 2 mm IXI T1 at
# 9% noise), and the map needs them most there.
FIELD_BLOCK_SNR = 1.5
# The quantile of the blocks' log RMS detail taken for the noise (the rest is anatomy).
QUANTILE = 0.1
# Fewer tissue blocks than this give no field (a small or nearly empty volume, or one whose tissue
# is hardly above the noise): with fewer the fitted spread is noise.
MIN_BLOCKS = 400
# The fit's rows are an even sample of at most this many blocks: a 1 mm brain has about 25,000.
MAX_FIT_BLOCKS = 6000
IRLS_ITERATIONS = 30
# The field's spread (its 95th over its 5th percentile in the tissue) above which the noise is
# said to vary (``benchmarks/varying_noise.py``): with uniform noise 1.02 to 1.39 on the quality
# benchmark's cases where the fit follows the noise (below), with a g-factor-like field of 0.6 to
# 1.5 times the level 1.44 to 1.81.
VARYING_SPREAD = 1.4
# Where the noise is low against the anatomy's fine detail (a raw scan of a few % noise or less),
# the blocks' RMS detail is mostly anatomy and a fit to it follows the anatomy, not the noise.
# Pure noise leaves the fit's residuals (log RMS) a median this far above their 10th percentile,
# the spread of a block's RMS (0.108); the excess over it is 0.9 to 2.2 on the quality benchmark's
# cases with uniform or g-factor-like noise, but for IXI080 T2-/PD-like at 3 and 5% (3.7 to 5.6:
# their references' own noise, amplified by the remap where the tissue is bright), and 2.8 to
# 4.5 on the raw T1 scans of ../shared/data.
PURE_NOISE_RESIDUAL = float(np.log(block_percentile_gain(BLOCK, 50) / block_percentile_gain(BLOCK, 100 * QUANTILE)))
MAX_RESIDUAL_EXCESS = 2.5


@dataclass(frozen=True)
class NoiseField:
    """exp(a quadratic in the position, in units of half the volume's extent from its centre),
    relative to its median over the tissue blocks, held within the range it took there
    (``log_range``); ``percentiles``: its 5th and 95th percentile there; ``residual_excess``: the
    fit's median residual over pure noise's (``PURE_NOISE_RESIDUAL``)."""

    coefficients: np.ndarray
    centre: tuple[float, float, float]
    log_range: tuple[float, float]
    percentiles: tuple[float, float]
    residual_excess: float

    @property
    def spread(self) -> float:
        return self.percentiles[1] / self.percentiles[0]

    @property
    def follows_anatomy(self) -> bool:
        """Whether the blocks' detail was mostly anatomy: the field then says nothing of the noise."""
        return self.residual_excess > MAX_RESIDUAL_EXCESS

    @property
    def varies(self) -> bool:
        return self.spread > VARYING_SPREAD and not self.follows_anatomy

    def on_grid(self, shape: tuple[int, int, int]) -> np.ndarray:
        """The field at every voxel of a volume of ``shape`` (float32; the only array of that size
        made: each term of the quadratic spans two axes at most)."""
        axes = [(np.arange(n, dtype=np.float32) + 0.5 - c) / c for n, c in zip(shape, self.centre)]
        log = np.zeros(shape, np.float32)
        for coefficient, term in zip(self.coefficients, _terms(np.meshgrid(*axes, indexing="ij", sparse=True))):
            log += np.float32(coefficient) * term
        np.clip(log, *self.log_range, out=log)
        return np.exp(log, out=log)


def _terms(axes) -> list:
    """The polynomial's terms in the three coordinates ``axes`` (arrays that broadcast), constant first.

    >>> len(_terms([np.zeros(1)] * 3))
    10
    """
    terms = [np.ones_like(axes[0])]
    for degree in range(1, DEGREE + 1):
        for combination in itertools.combinations_with_replacement(range(3), degree):
            terms.append(functools.reduce(operator.mul, (axes[axis] for axis in combination)))
    return terms


def quantile_regression(design: np.ndarray, target: np.ndarray, quantile: float) -> np.ndarray:
    """Coefficients that minimise the pinball loss of ``target - design @ coefficients`` at
    ``quantile`` (iteratively reweighted least squares).

    >>> x = np.linspace(0, 1, 1001)
    >>> y = 2 * x + np.random.default_rng(1).exponential(1.0, x.size)
    >>> quantile_regression(np.stack([np.ones_like(x), x], 1), y, 0.5).round(1).tolist()
    [0.7, 2.0]
    """
    coefficients = np.linalg.lstsq(design, target, rcond=None)[0]
    for _ in range(IRLS_ITERATIONS):
        residual = target - design @ coefficients
        weight = np.sqrt(np.where(residual > 0, quantile, 1 - quantile) / np.maximum(np.abs(residual), 1e-3))
        coefficients = np.linalg.lstsq(design * weight[:, None], target * weight, rcond=None)[0]
    return coefficients


def estimate_noise_field(blocks: NoiseBlocks, sigma: float) -> NoiseField | None:
    """The relative noise field of the image ``blocks`` were taken from (``noise.estimate_noise``),
    fitted on its blocks of tissue above ``FIELD_BLOCK_SNR`` x ``sigma``; None with too few."""
    tissue = (blocks.darkest > FIELD_BLOCK_SNR * sigma) & (blocks.rms > 0)
    if tissue.sum() < MIN_BLOCKS:
        return None
    every = max(1, int(tissue.sum()) // MAX_FIT_BLOCKS)
    index = np.flatnonzero(tissue)[::every]
    centre = tuple(n / 2 for n in blocks.shape)
    position = (blocks.centres[index] - centre) / centre
    spatial = np.stack(_terms(list(position.T)), 1)
    level = np.log(blocks.level[index] / sigma)
    level = (level - level.mean()) / max(float(level.std()), 1e-6)
    design = np.concatenate([spatial, np.stack([level, level**2, level**3], 1)], 1)
    log_rms = np.log(blocks.rms[index])
    coefficients = quantile_regression(design, log_rms, QUANTILE)
    excess = float(np.median(log_rms - design @ coefficients)) / PURE_NOISE_RESIDUAL
    coefficients = coefficients[: spatial.shape[1]]
    log = spatial @ coefficients
    median = np.median(log)
    coefficients[0] -= median  # the first term is the constant
    log -= median
    low, high = np.exp(np.percentile(log, [5, 95]))
    return NoiseField(coefficients, centre, (float(log.min()), float(log.max())), (float(low), float(high)), excess)
