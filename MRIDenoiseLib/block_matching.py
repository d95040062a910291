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

from .dct_wiener import BLOCK, dct_basis, rician_amplitude, rician_mean

STEP = 3
RADIUS = 3
MATCHES = 16
# Reference windows grouped at once: about 200 MB of gathered windows and their indices.
REFERENCES_PER_CHUNK = 1 << 13


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
    in_window = torch.stack(torch.meshgrid(*[torch.arange(block)] * 3, indexing="ij"), -1).reshape(-1, 3) @ strides
    window_transform = torch.kron(torch.kron(dct_basis(block), dct_basis(block)), dct_basis(block)).to(device)
    group_transform = dct_basis(matches).to(device)
    total = torch.zeros(noisy_padded.numel(), device=device)
    weight_sum = torch.zeros(noisy_padded.numel(), device=device)

    def transform(windows):  # (window in group, reference, voxel) -> their coefficients
        return torch.einsum("kj,jrc->krc", group_transform, windows @ window_transform.T)

    planes = max(1, REFERENCES_PER_CHUNK // (len(corners[1]) * len(corners[2])))
    for first in range(0, len(corners[0]), planes):
        chunk = [corners[0][first:first + planes], corners[1], corners[2]]
        distance = _distances(expected_padded, chunk, offsets, block, step, radius)
        distance[itself] = -1  # the reference heads its group even among ties (a flat background)
        nearest = offsets[distance.flatten(1).topk(matches, dim=0, largest=False).indices.cpu()]
        references = torch.stack(torch.meshgrid(*chunk, indexing="ij"), -1).reshape(-1, 3) + radius
        voxels = (((references[None] + nearest) @ strides)[..., None] + in_window).to(device)
        coefficients = transform(noisy_padded.reshape(-1)[voxels])
        gain = transform(expected_padded.reshape(-1)[voxels]).square_()
        gain = gain.div_(gain + sigma * sigma)
        weight = gain.square().sum(dim=(0, 2)).clamp_(min=1e-3).reciprocal_()
        estimate = torch.einsum("kj,krc->jrc", group_transform, coefficients.mul_(gain)) @ window_transform
        total.index_add_(0, voxels.reshape(-1), estimate.mul_(weight[:, None]).reshape(-1))
        weight_sum.index_add_(0, voxels.reshape(-1), weight[None, :, None].expand_as(estimate).reshape(-1))
        if progress is not None:
            progress(min(1.0, (first + planes) / len(corners[0])))
    inside = tuple(slice(radius, radius + n) for n in noisy.shape)
    return rician_amplitude((total / weight_sum).reshape(shape)[inside], sigma)


def _distances(expected_padded: torch.Tensor, corners: list[torch.Tensor], offsets: torch.Tensor,
               block: int, step: int, radius: int) -> torch.Tensor:
    """(offset, references along D, H, W): the mean squared difference in the pilot between each
    reference window (``corners``, ``step`` apart) and the window ``offset`` away."""
    span = [slice(int(c[0]) + radius, int(c[-1]) + radius + block) for c in corners]
    reference = expected_padded[tuple(span)]
    distances = []
    for offset in offsets.tolist():
        moved = expected_padded[tuple(slice(s.start + o, s.stop + o) for s, o in zip(span, offset))]
        distances.append(F.avg_pool3d((reference - moved).square_()[None, None], block, stride=step)[0, 0])
    return torch.stack(distances)
