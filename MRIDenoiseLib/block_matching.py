"""A Wiener step on groups of matched windows: BM3D's second step (BM4D's, for volumes), with
the network's output as the pilot. Not yet part of the pipeline: see TRAINING_RUNS.md, "A
grouped Wiener step".

For every reference window of ``block`` voxels (placed ``step`` voxels apart), the ``matches``
windows nearest to it in the pilot (mean squared difference, the reference itself included)
within ``radius`` voxels are stacked into a group. The group is transformed (a 3-D DCT of each
window, then a DCT across the windows), each coefficient of the noisy group is kept in the
share P² / (P² + σ²) of the pilot's, and the windows are put back where they came from with
BM3D's weights 1 / Σ gain² per group. Similar windows from around a voxel, not only the
windows that hold it, so that a structure that repeats (a cortex, a vessel, a flat tissue) is
averaged with its like. As ``dct_wiener``, on the magnitude: the pilot goes through the Rician
mean first, the result back to an amplitude after.

>>> clean = torch.full((12, 12, 12), 10.0)
>>> noisy = clean + torch.randn(12, 12, 12, generator=torch.Generator().manual_seed(0))
>>> filtered = block_matched_wiener(noisy, pilot=clean, sigma=1.0)
>>> float((filtered - clean).std()) < 0.2 * float((noisy - clean).std())
True
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F

from .dct_wiener import BLOCK, dct_basis, overlap_sums, rician_amplitude, rician_mean

STEP = 3
RADIUS = 3
MATCHES = 16
# Reference windows matched at once on a CPU: a distance to each of (2 * RADIUS + 1)³ candidates,
# about 90 MB; fewer, and the work per candidate is too small to run fast.
REFERENCES_PER_SLAB = 1 << 16
# Reference windows grouped at once on a CPU: 8 MB of gathered windows per array and 16 MB of
# their voxels' indices, under the size (32 MB) above which glibc asks the system for fresh
# memory on every call (a page fault per 4 kB: 1.5 times the time with 4 times as many).
REFERENCES_PER_CHUNK = 1 << 11
# A GPU takes 16 and 32 times as many (1.4 GB of distances, about 2 GB at the peak of a chunk):
# a slab is some 4,000 small operations, so a 512³ volume in 1 << 16 would be 300,000.
REFERENCES_PER_SLAB_GPU = 1 << 20
REFERENCES_PER_CHUNK_GPU = 1 << 16


def references_per_slab_and_chunk(device: torch.device) -> tuple[int, int]:
    if device.type == "cpu":
        return REFERENCES_PER_SLAB, REFERENCES_PER_CHUNK
    return REFERENCES_PER_SLAB_GPU, REFERENCES_PER_CHUNK_GPU


def block_matched_wiener(
    noisy: torch.Tensor,
    pilot: torch.Tensor,
    sigma: float,
    block: int = BLOCK,
    step: int = STEP,
    radius: int = RADIUS,
    matches: int = MATCHES,
    progress: Optional[Callable[[float], None]] = None,
) -> torch.Tensor:
    """The grouped Wiener estimate of the amplitude under ``noisy`` (a 3-D magnitude volume), with
    groups matched and gains taken on ``pilot`` (an amplitude estimate of the same shape).
    ``progress`` is told the share done after each chunk of reference windows (and may raise to
    stop)."""
    device = noisy.device
    matches = min(matches, (2 * radius + 1) ** 3)
    expected = rician_mean(pilot.float(), sigma)
    # A margin of ``radius`` lets every candidate window lie inside (replicated edges are
    # candidates too), and a few voxels more at the end let the references, ``step`` apart,
    # cover every voxel, and a window fit along an axis thinner than it (a few slices).
    extra = [max(block - n, 0) + (-(max(n, block) - block)) % step for n in noisy.shape]
    pad = [v for n_extra in reversed(extra) for v in (radius, radius + n_extra)]
    noisy_padded = F.pad(noisy.float()[None, None], pad, mode="replicate")[0, 0].contiguous()
    expected_padded = F.pad(expected[None, None], pad, mode="replicate")[0, 0].contiguous()
    shape = noisy_padded.shape
    corners = [torch.arange(0, n + n_extra - block + 1, step) for n, n_extra in zip(noisy.shape, extra)]
    offsets = torch.tensor(list(itertools.product(range(-radius, radius + 1), repeat=3)))
    itself = (offsets == 0).all(dim=1)
    strides = torch.tensor([shape[1] * shape[2], shape[2], 1])
    in_window = (torch.stack(torch.meshgrid(*[torch.arange(block)] * 3, indexing="ij"), -1).reshape(-1, 3) @ strides).to(device)
    noisy_windows, expected_windows = (_windows(volume, block) for volume in (noisy_padded, expected_padded))
    window_transform = torch.kron(torch.kron(dct_basis(block), dct_basis(block)), dct_basis(block)).to(device)
    group_transform = dct_basis(matches).to(device)
    total = torch.zeros(noisy_padded.numel(), device=device)
    # Each window's weight is added at its first corner; summing over the windows that hold a
    # voxel (every corner a window, one voxel apart), once at the end, gives its sum of weights.
    corner_weight = torch.zeros(noisy_padded.numel(), device=device)

    def transform(windows):  # (window in group, reference, voxel) -> their coefficients
        return torch.einsum("kj,jrc->krc", group_transform, windows @ window_transform.T)

    per_plane = len(corners[1]) * len(corners[2])
    references_total = len(corners[0]) * per_plane
    per_slab, chunk = references_per_slab_and_chunk(device)
    planes = max(1, per_slab // per_plane)
    for first in range(0, len(corners[0]), planes):
        slab = [corners[0][first:first + planes], corners[1], corners[2]]
        distance = _distances(expected_padded, slab, offsets, block, step, radius)
        distance[itself] = -1  # the reference heads its group even among ties (a flat background)
        nearest_in_slab = distance.flatten(1).topk(matches, dim=0, largest=False).indices.cpu()
        references_in_slab = torch.stack(torch.meshgrid(*slab, indexing="ij"), -1).reshape(-1, 3) + radius
        for start in range(0, len(references_in_slab), chunk):
            nearest = offsets[nearest_in_slab[:, start:start + chunk]]
            window_corners = ((references_in_slab[None, start:start + chunk] + nearest) @ strides).to(device)
            coefficients = transform(noisy_windows[window_corners].flatten(2))
            gain = transform(expected_windows[window_corners].flatten(2)).square_()
            gain = gain.div_(gain + sigma * sigma)
            weight = gain.square().sum(dim=(0, 2)).clamp_(min=1e-3).reciprocal_()
            estimate = torch.einsum("kj,krc->jrc", group_transform, coefficients.mul_(gain)) @ window_transform
            voxels = window_corners[..., None] + in_window
            total.index_add_(0, voxels.reshape(-1), estimate.mul_(weight[:, None]).reshape(-1))
            corner_weight.index_add_(0, window_corners.reshape(-1), weight.expand(len(nearest), -1).reshape(-1))
            if progress is not None:
                progress(min(first * per_plane + start + chunk, references_total) / references_total)
    weight_sum = overlap_sums(corner_weight.reshape(shape), block, 1)[: shape[0], : shape[1], : shape[2]]
    inside = tuple(slice(radius, radius + n) for n in noisy.shape)
    return rician_amplitude((total.reshape(shape) / weight_sum)[inside], sigma)


def _windows(volume: torch.Tensor, block: int) -> torch.Tensor:
    """A view of ``volume`` (contiguous) as the window of ``block`` voxels along each axis at each
    flat index: a gather of windows by their first corner's flat index, not of every voxel."""
    last_corner = volume.numel() - (block - 1) * sum(volume.stride())
    return volume.reshape(-1).as_strided((last_corner, block, block, block), (1, *volume.stride()))


def _strided_window_sums(volume: torch.Tensor, block: int, step: int, out: torch.Tensor,
                         partial: list[torch.Tensor]) -> None:
    """``out`` = the sums of ``volume`` over windows of ``block`` voxels along each axis, their
    first corners ``step`` apart from the origin (``avg_pool3d(volume, block, step) * block³``,
    faster on a CPU); ``partial`` holds the sums along the first and the first two axes, reused
    from call to call (so that the memory is not asked of the system again and again)."""
    for axis, summed in enumerate([*partial, out]):
        every_step = (slice(None),) * axis + (slice(None, None, step),)
        length = step * (summed.shape[axis] - 1) + 1
        torch.add(volume.narrow(axis, 0, length)[every_step], volume.narrow(axis, 1, length)[every_step], out=summed)
        for shift in range(2, block):
            summed.add_(volume.narrow(axis, shift, length)[every_step])
        volume = summed


def _distances(expected_padded: torch.Tensor, corners: list[torch.Tensor], offsets: torch.Tensor,
               block: int, step: int, radius: int) -> torch.Tensor:
    """(offset, references along D, H, W): the squared difference in the pilot, summed over the
    window, between each reference window (``corners``, ``step`` apart) and the window
    ``offset`` away."""
    span = [slice(int(c[0]) + radius, int(c[-1]) + radius + block) for c in corners]
    reference = expected_padded[tuple(span)]
    counts = [len(c) for c in corners]
    distances = reference.new_empty((len(offsets), *counts))
    difference = torch.empty_like(reference)
    partial = [reference.new_empty((*counts[:1], *reference.shape[1:])), reference.new_empty((*counts[:2], reference.shape[2]))]
    for distance, offset in zip(distances, offsets.tolist()):
        moved = expected_padded[tuple(slice(s.start + o, s.stop + o) for s, o in zip(span, offset))]
        torch.sub(reference, moved, out=difference).square_()
        _strided_window_sums(difference, block, step, distance, partial)
    return distances
