"""Wiener filtering of a magnitude image in overlapping 3-D DCT windows, steered by a pilot.

This is the second step of BM3D-like methods, without block matching. Every window of
``block`` voxels of the noisy image is transformed (orthonormal DCT-II), and each coefficient
is kept in the share P² / (P² + σ²), where P is the same coefficient of a cleaner estimate (the
pilot: here the network's output). Where the pilot holds structure, the noisy image's own
coefficient is kept; where it holds none, the coefficient is dropped. The windows, placed
``step`` voxels apart, are put back with BM3D's weights 1 / Σ gain², so windows that kept less
noise count more.

The filter runs on the magnitude, whose mean is the Rician mean of the clean amplitude: the
pilot is mapped to that mean first, and the result back to an amplitude after.

>>> import torch
>>> clean = torch.full((16, 16, 16), 10.0)
>>> noisy = clean + torch.randn(16, 16, 16, generator=torch.Generator().manual_seed(0))
>>> filtered = dct_wiener(noisy, pilot=clean, sigma=1.0)
>>> float((filtered - clean).std()) < 0.3 * float((noisy - clean).std())
True
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F

BLOCK = 4
# Windows one voxel apart: two apart keep half the gain or less (TRAINING_RUNS.md, "A Wiener step").
STEP = 1
# Windows transformed at once: 16 MB of float32 coefficients per array for 4x4x4 windows.
WINDOWS_PER_CHUNK = 1 << 16


@functools.cache
def dct_basis(length: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix: row k is frequency k sampled at the ``length`` voxels.

    >>> basis = dct_basis(4)
    >>> bool(torch.allclose(basis @ basis.T, torch.eye(4), atol=1e-6))
    True
    """
    position = torch.arange(length, dtype=torch.float64)
    frequency = position[:, None]
    basis = torch.cos(math.pi * (2 * position[None, :] + 1) * frequency / (2 * length)) * math.sqrt(2 / length)
    basis[0] /= math.sqrt(2)
    return basis.float()


def rician_mean(amplitude: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[M] of a Rician magnitude M whose noise-free amplitude is ``amplitude``.

    >>> round(float(rician_mean(torch.tensor(0.0), 1.0)), 4)  # the Rayleigh mean, sqrt(pi / 2)
    1.2533
    """
    half = amplitude.double().square() / (4 * sigma * sigma)
    bessel = (1 + 2 * half) * torch.special.i0e(half) + 2 * half * torch.special.i1e(half)
    return (sigma * math.sqrt(math.pi / 2) * bessel).to(amplitude.dtype)


def rician_amplitude(mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """The amplitude whose Rician mean is ``mean``: 0 at or below the mean of pure noise; above
    60 σ, where the two differ by σ² / 2A, that correction.

    >>> round(float(rician_amplitude(rician_mean(torch.tensor(3.0), 1.0), 1.0)), 3)
    3.0
    """
    grid = torch.linspace(0, 60, 6001, dtype=torch.float64, device=mean.device) * sigma
    means = rician_mean(grid, sigma)
    values = mean.double().clamp(min=float(means[0]))
    upper = torch.searchsorted(means, values.reshape(-1)).clamp(1, len(grid) - 1).reshape(values.shape)
    low, high = means[upper - 1], means[upper]
    amplitude = grid[upper - 1] + (values - low) / (high - low) * (grid[upper] - grid[upper - 1])
    beyond = values > means[-1]
    amplitude = torch.where(beyond, values - sigma * sigma / (2 * values), amplitude)
    return amplitude.to(mean.dtype)


@functools.cache
def _axis_filters(length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grouped convolution weights of the DCT along D, H and W in turn: the first makes one
    channel per frequency along D, the second splits each into the frequencies along H, the
    third along W (channels ordered by frequency along D, H, W, the last fastest)."""
    basis = dct_basis(length)
    return (basis.reshape(length, 1, length, 1, 1), basis.repeat(length, 1).reshape(length**2, 1, 1, length, 1),
            basis.repeat(length**2, 1).reshape(length**3, 1, 1, 1, length))


def _coefficients(rows: torch.Tensor, length: int, step: int) -> torch.Tensor:
    """The DCT of every window of ``rows`` (D, H, W), windows ``step`` apart:
    (frequency, windows along D, H, W)."""
    first, second, third = (weight.to(rows.device) for weight in _axis_filters(length))
    channels = F.conv3d(rows[None, None], first, stride=(step, 1, 1))
    channels = F.conv3d(channels, second, stride=(1, step, 1), groups=length)
    return F.conv3d(channels, third, stride=(1, 1, step), groups=length**2)[0]


def _put_back(coefficients: torch.Tensor, length: int, step: int) -> torch.Tensor:
    """The inverse of ``_coefficients``, summed where windows overlap: (D, H, W) of the rows the
    windows cover. The transposed convolutions invert the DCT and add the windows up at once."""
    first, second, third = (weight.to(coefficients.device) for weight in _axis_filters(length))
    channels = F.conv_transpose3d(coefficients[None], third, stride=(1, 1, step), groups=length**2)
    channels = F.conv_transpose3d(channels, second, stride=(1, step, 1), groups=length)
    return F.conv_transpose3d(channels, first, stride=(step, 1, 1))[0, 0]


def dct_wiener(
    noisy: torch.Tensor,
    pilot: torch.Tensor,
    sigma: float,
    block: int = BLOCK,
    step: int = STEP,
    progress: Optional[Callable[[float], None]] = None,
) -> torch.Tensor:
    """The Wiener estimate of the amplitude under ``noisy`` (a 3-D magnitude volume), with the
    gains of ``pilot`` (an amplitude estimate of the same shape). ``step`` must divide ``block``.
    ``progress`` is told the share done after each chunk of windows (and may raise to stop)."""
    if block % step:
        raise ValueError(f"the window step {step} must divide the window {block}")
    margin = block - step
    sizes = noisy.shape
    # Every voxel of the volume lies in (block / step)³ windows: a margin of block - step before it, and
    # after it up to whole steps. The pilot is padded alike, so the margins are filtered in kind.
    after = [margin + (-(n + 2 * margin - block)) % step for n in sizes]
    pad = [v for n_after in reversed(after) for v in (margin, n_after)]
    variance = sigma * sigma
    expected = rician_mean(pilot.float(), sigma)
    noisy_padded = F.pad(noisy.float()[None, None], pad, mode="replicate")[0, 0]
    expected_padded = F.pad(expected[None, None], pad, mode="replicate")[0, 0]
    windows = [(n - block) // step + 1 for n in noisy_padded.shape]
    total = torch.zeros_like(noisy_padded)
    weight_sum = torch.zeros_like(noisy_padded)
    ones = torch.ones((1, 1, block, block, block), device=noisy.device)
    chunk = max(1, WINDOWS_PER_CHUNK // (windows[1] * windows[2]))
    for first in range(0, windows[0], chunk):
        last = min(windows[0], first + chunk)
        rows = slice(first * step, (last - 1) * step + block)
        coefficients = _coefficients(noisy_padded[rows], block, step)
        gain = _coefficients(expected_padded[rows], block, step).square_()
        gain = gain.div_(gain + variance)
        weight = 1 / gain.square().sum(dim=0).clamp_(min=1e-3)
        coefficients.mul_(gain).mul_(weight)
        total[rows] += _put_back(coefficients, block, step)
        weight_sum[rows] += F.conv_transpose3d(weight[None, None], ones, stride=step)[0, 0]
        if progress is not None:
            progress(last / windows[0])
    inside = tuple(slice(margin, margin + n) for n in sizes)
    return rician_amplitude(total[inside] / weight_sum[inside], sigma)
