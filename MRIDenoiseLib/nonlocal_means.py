"""Non-local averaging of a magnitude image: voxels are averaged with neighbours that look alike.

Two flavours share one loop. ``patch_means`` weighs a neighbour by how alike the 3x3x3 patches
around the two voxels are in the noisy image itself (non-local means, as DIPY and ANTs do).
``guided_means`` weighs it by how alike the two voxels are in a cleaner *guide* image, here an
earlier estimate (the second, "pilot" stage of BM3D-like methods): a guide with little noise
tells apart neighbours the noisy image cannot. Both average the squared magnitude and remove
the Rician bias 2σ², so the result is unbiased in the dark as well as in tissue.

A pair of voxels gets the same weight seen from either end, so every offset d is visited once
and used for both x+d and x-d.

>>> import torch
>>> flat = torch.full((1, 1, 12, 12, 12), 2.0)
>>> noisy = torch.sqrt((flat + 0.1 * torch.randn_like(flat)) ** 2 + (0.1 * torch.randn_like(flat)) ** 2)
>>> variance = torch.tensor(0.01).reshape(1, 1, 1, 1, 1)
>>> bool((patch_means(noisy, variance) - flat).std() < 0.5 * (noisy - flat).std())
True
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F

Offset = tuple[int, int, int]
PairWeight = Callable[[Offset, tuple, tuple], torch.Tensor]

# Weights are exp of at least this: below it exp gives less than float32's smallest normal number
# (1.2e-38), a weight that changes no sum, and the CPU takes ten times as long to compute it.
EXP_FLOOR = -87.0


@functools.cache
def neighbour_offsets(squared_radius: int) -> tuple[Offset, ...]:
    """One offset of each +-d pair within a sphere of the given squared radius (in voxels).

    >>> len(neighbour_offsets(2)), len(neighbour_offsets(5))
    (9, 28)
    """
    reach = int(squared_radius**0.5)
    span = range(-reach, reach + 1)
    return tuple(
        d for d in itertools.product(span, repeat=3) if d > (0, 0, 0) and sum(v * v for v in d) <= squared_radius
    )


def _overlap(shape: torch.Size, offset: Offset) -> tuple[tuple, tuple]:
    """Index of the voxels x, and of their neighbours x + offset, where both lie in the volume."""
    here, there = [Ellipsis], [Ellipsis]
    for length, step in zip(shape, offset):
        here.append(slice(max(0, -step), length - max(0, step)))
        there.append(slice(max(0, step), length + min(0, step)))
    return tuple(here), tuple(there)


def _patch_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over each voxel's 3x3x3 patch (border voxels repeat their inner neighbour's mean)."""
    if min(values.shape[2:]) < 3:
        return values
    summed = values[..., :-2, :, :] + values[..., 1:-1, :, :]
    summed += values[..., 2:, :, :]
    rows = summed[..., :-2, :] + summed[..., 1:-1, :]
    rows += summed[..., 2:, :]
    cube = rows[..., :-2] + rows[..., 1:-1]
    cube += rows[..., 2:]
    return F.pad(cube.div_(27), (1, 1, 1, 1, 1, 1), mode="replicate")


def _rician_average(image: torch.Tensor, variance: torch.Tensor, squared_radius: int, pair_weight: PairWeight) -> torch.Tensor:
    squared = image * image
    total = squared.clone()
    weight_sum = torch.ones_like(image)
    for offset in neighbour_offsets(squared_radius):
        here, there = _overlap(image.shape[2:], offset)
        weight = pair_weight(offset, here, there)
        total[here].addcmul_(weight, squared[there])
        total[there].addcmul_(weight, squared[here])
        weight_sum[here].add_(weight)
        weight_sum[there].add_(weight)
    return torch.sqrt(torch.clamp(total / weight_sum - 2 * variance, min=1e-8))


def patch_means(image: torch.Tensor, variance: torch.Tensor, squared_radius: int = 5, width: float = 0.8) -> torch.Tensor:
    """Non-local means with 3x3x3 patches over a sphere of neighbours.

    Two patches of the same anatomy differ by noise alone, 2σ² per voxel on average; only what
    exceeds that counts, in units of ``width``² σ².
    """
    scale = -1 / (width * width * variance)

    def pair_weight(offset, here, there):
        # In place: the input image never carries gradients, and this runs for every offset.
        distance = _patch_mean((image[here] - image[there]).square_())
        return distance.sub_(2 * variance).relu_().mul_(scale).clamp_(min=EXP_FLOOR).exp_()

    return _rician_average(image, variance, squared_radius, pair_weight)


def guided_means(
    image: torch.Tensor,
    guide: torch.Tensor,
    variance: torch.Tensor,
    squared_radius: int = 5,
    width: float = 0.8,
    spatial_decay: float = 0.3,
) -> torch.Tensor:
    """Means of ``image`` over neighbours whose ``guide`` values are within about ``width`` σ of
    the voxel's own, and nearer neighbours more (a factor exp(-``spatial_decay`` |d|²))."""
    scale = -1 / (width * width * variance)

    def pair_weight(offset, here, there):
        difference = guide[here] - guide[there]
        nearness = torch.full_like(scale, -spatial_decay * sum(v * v for v in offset))
        return torch.exp(torch.addcmul(nearness, difference, difference * scale).clamp_(min=EXP_FLOOR))

    return _rician_average(image, variance, squared_radius, pair_weight)
