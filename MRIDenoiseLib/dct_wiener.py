"""Wiener filtering of a magnitude image in overlapping 3-D DCT windows, steered by a pilot.

This is the second step of BM3D-like methods, without block matching: what ``--thorough`` ran
before the grouped step (``block_matching``, which imports the DCT basis and the Rician mapping
from here) replaced it; ``benchmarks/headroom.py`` still compares the two. Every window of
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
# Windows transformed at once on a CPU: 16 MB of float32 coefficients per array for 4x4x4
# windows (more runs slower, out of the cache). A GPU takes 32 times as many (512 MB per array,
# about 2 GB at the peak): each chunk is about a thousand small operations.
WINDOWS_PER_CHUNK = 1 << 16
WINDOWS_PER_CHUNK_GPU = 1 << 21


def windows_per_chunk(device: torch.device) -> int:
    return WINDOWS_PER_CHUNK if device.type == "cpu" else WINDOWS_PER_CHUNK_GPU


@functools.cache
def dct_basis(length: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix: row k is frequency k sampled at the ``length`` voxels.

    >>> basis = dct_basis(4)
    >>> bool(torch.allclose(basis @ basis.T, torch.eye(4), atol=1e-6))
    True
    """
    # Cached, so never an inference tensor (as one made under inference_mode would be), which
    # training through the grouped step could not use.
    with torch.inference_mode(False):
        position = torch.arange(length, dtype=torch.float64)
        frequency = position[:, None]
        basis = torch.cos(math.pi * (2 * position[None, :] + 1) * frequency / (2 * length)) * math.sqrt(2 / length)
        basis[0] /= math.sqrt(2)
        return basis.float()


# Voxels mapped at once by ``rician_mean`` and ``rician_amplitude``: their temporaries (a dozen
# arrays, some of int64) would otherwise be several times a large volume's memory.
VOXELS_PER_MAPPING = 1 << 22


def _voxel_chunks(mapping: Callable[[torch.Tensor], torch.Tensor], values: torch.Tensor) -> torch.Tensor:
    """``mapping`` (element-wise) of ``values``, ``VOXELS_PER_MAPPING`` voxels at a time."""
    if values.numel() <= VOXELS_PER_MAPPING:
        return mapping(values)
    flat = values.reshape(-1)
    out = torch.empty_like(flat)
    for start in range(0, flat.numel(), VOXELS_PER_MAPPING):
        out[start:start + VOXELS_PER_MAPPING] = mapping(flat[start:start + VOXELS_PER_MAPPING])
    return out.reshape(values.shape)


def rician_mean(amplitude: torch.Tensor, sigma: float) -> torch.Tensor:
    """E[M] of a Rician magnitude M whose noise-free amplitude is ``amplitude`` (in its dtype).

    >>> round(float(rician_mean(torch.tensor(0.0), 1.0)), 4)  # the Rayleigh mean, sqrt(pi / 2)
    1.2533
    """
    return _voxel_chunks(lambda values: _rician_mean(values, sigma), amplitude)


def _rician_mean(amplitude: torch.Tensor, sigma: float) -> torch.Tensor:
    half = amplitude.square() / (4 * sigma * sigma)
    bessel = (1 + 2 * half) * torch.special.i0e(half) + 2 * half * torch.special.i1e(half)
    return sigma * math.sqrt(math.pi / 2) * bessel


def rician_amplitude(mean: torch.Tensor, sigma: float, samples: int = 6001) -> torch.Tensor:
    """The amplitude whose Rician mean is ``mean``: 0 at or below the mean of pure noise; above
    60 σ, where the two differ by σ² / 2A, that correction. In between, linear interpolation in
    the square root of the mean's excess over pure noise's, in which the amplitude is nearly
    linear (near the floor the mean grows with the amplitude squared), on an evenly spaced table,
    so each voxel costs a lookup, not a search.

    >>> round(float(rician_amplitude(rician_mean(torch.tensor(3.0), 1.0), 1.0)), 3)
    3.0
    """
    amplitudes = torch.linspace(0, 60, samples, dtype=torch.float64) * sigma
    means = rician_mean(amplitudes, sigma)
    roots = (means - means[0]).sqrt()
    even_roots = torch.linspace(0, float(roots[-1]), samples, dtype=torch.float64)
    upper = torch.searchsorted(roots, even_roots).clamp(1, samples - 1)
    share = (even_roots - roots[upper - 1]) / (roots[upper] - roots[upper - 1])
    table = torch.lerp(amplitudes[upper - 1], amplitudes[upper], share).to(mean.device, mean.dtype)
    floor, spacing, top = float(means[0]), float(even_roots[1]), float(means[-1])

    def look_up(values: torch.Tensor) -> torch.Tensor:
        position = (values - floor).clamp(min=0).sqrt_().div_(spacing)
        index = position.long().clamp_(max=samples - 2)
        amplitude = torch.lerp(table[index], table[index + 1], position.sub_(index))
        return torch.where(values > top, values - sigma * sigma / (2 * values), amplitude)

    return _voxel_chunks(look_up, mean)


def _analyse(volume: torch.Tensor, basis: torch.Tensor, step: int, dim: int) -> torch.Tensor:
    """The transform by ``basis`` (frequency, tap) of every window along ``dim`` of ``volume``,
    windows ``step`` apart: (frequency, *volume's axes with windows along dim*). Each frequency
    is a sum of shifted views of the volume, one per tap (faster on a CPU than a grouped
    convolution with such small kernels)."""
    taps = volume.unfold(dim, basis.shape[1], step)
    transformed = volume.new_empty((basis.shape[0],) + taps.shape[:-1])
    for frequency, row in zip(transformed, basis.tolist()):
        torch.mul(taps[..., 0], row[0], out=frequency)
        for tap, value in enumerate(row[1:], start=1):
            frequency.add_(taps[..., tap], alpha=value)
    return transformed


def _synthesise(transformed: torch.Tensor, basis: torch.Tensor, step: int, dim: int,
                out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The inverse of ``_analyse``, the windows added up where they overlap (into ``out`` when
    given, else into zeros)."""
    if out is None:
        shape = list(transformed.shape[1:])
        shape[dim] = (shape[dim] - 1) * step + basis.shape[1]
        out = transformed.new_zeros(shape)
    taps = out.unfold(dim, basis.shape[1], step)
    for tap, column in enumerate(basis.T.tolist()):
        for frequency, value in zip(transformed, column):
            taps[..., tap].add_(frequency, alpha=value)
    return out


def overlap_sums(window_values: torch.Tensor, block: int, step: int) -> torch.Tensor:
    """For each voxel, the sum of ``window_values`` (one per window of ``block`` voxels along each
    axis, windows ``step`` apart) over the windows that hold it: ``(windows - 1) * step + block``
    voxels along each axis.

    >>> overlap_sums(torch.ones(2, 1, 1), block=2, step=1)[:, 0, 0].tolist()
    [1.0, 2.0, 1.0]
    """
    ones = window_values.new_ones(1, block)
    for dim in (-1, -2, -3):
        window_values = _synthesise(window_values[None], ones, step, dim)
    return window_values


def _coefficients(rows: torch.Tensor, basis: torch.Tensor, step: int) -> torch.Tensor:
    """The 3-D DCT of every window of ``rows`` (D, H, W), windows ``step`` apart:
    (frequency along W, along H, along D, windows along D, H, W)."""
    for dim in (-3, -2, -1):
        rows = _analyse(rows, basis, step, dim)
    return rows


def _put_back(coefficients: torch.Tensor, basis: torch.Tensor, step: int, out: torch.Tensor) -> None:
    """The inverse of ``_coefficients``, the windows added to ``out``, the rows they cover."""
    for dim in (-1, -2):
        coefficients = _synthesise(coefficients, basis, step, dim)
    _synthesise(coefficients, basis, step, -3, out)


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
    basis = dct_basis(block).to(noisy.device)
    total = torch.zeros_like(noisy_padded)
    window_weights = noisy_padded.new_empty(windows)
    chunk = max(1, windows_per_chunk(noisy.device) // (windows[1] * windows[2]))
    for first in range(0, windows[0], chunk):
        last = min(windows[0], first + chunk)
        rows = slice(first * step, (last - 1) * step + block)
        coefficients = _coefficients(noisy_padded[rows], basis, step)
        gain = _coefficients(expected_padded[rows], basis, step).square_()
        gain = gain.div_(gain + variance)
        window_weights[first:last] = gain.square().flatten(0, 2).sum(dim=0).clamp_(min=1e-3).reciprocal_()
        _put_back(coefficients.mul_(gain).mul_(window_weights[first:last]), basis, step, total[rows])
        if progress is not None:
            progress(last / windows[0])
    weight_sum = overlap_sums(window_weights, block, step)
    inside = tuple(slice(margin, margin + n) for n in sizes)
    return rician_amplitude(total[inside] / weight_sum[inside], sigma)
