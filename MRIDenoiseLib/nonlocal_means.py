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
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F

from .worker_threads import one_thread_per_operation

Offset = tuple[int, int, int]
PairWeight = Callable[[Offset, tuple, tuple], torch.Tensor]


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


# Voxels per slab: the volume is visited in slabs of whole rows along the first axis, every
# neighbour offset on one slab before the next, so that the many passes of each offset over a slab
# (about 1 MB of float32 per array) run in the CPU's cache instead of main memory.
SLAB_VOXELS = 1 << 18
# Weights are exp of at least this: below it exp gives less than float32's smallest normal number
# (1.2e-38), a weight that changes no sum, and the CPU takes ten times as long to compute it.
EXP_FLOOR = -87.0


def _slabs(depth: int, least_rows: int, row_voxels: int) -> list[tuple[int, int]]:
    """Consecutive row ranges covering ``range(depth)``, each at least ``least_rows`` long (or all of it).

    >>> _slabs(10, 4, 1 << 17)
    [(0, 5), (5, 10)]
    """
    rows = max(least_rows, SLAB_VOXELS // row_voxels)
    count = max(1, depth // rows)
    bounds = [depth * index // count for index in range(count + 1)]
    return list(itertools.pairwise(bounds))


def _overlap(shape: torch.Size, offset: Offset, rows: tuple[int, int]) -> tuple[tuple, tuple]:
    """Index of the voxels x in ``rows`` (of the first axis), and of their neighbours x + offset,
    where both lie in the volume."""
    here, there = [Ellipsis], [Ellipsis]
    for axis, (length, step) in enumerate(zip(shape, offset)):
        start, stop = max(0, -step), length - max(0, step)
        if axis == 0:
            start, stop = max(start, rows[0]), min(stop, rows[1])
            stop = max(start, stop)
        here.append(slice(start, stop))
        there.append(slice(start + step, stop + step))
    return tuple(here), tuple(there)


def _patch_mean(values: torch.Tensor, depth: int, before: int, after: int) -> torch.Tensor:
    """Mean over each voxel's 3x3x3 patch (border voxels repeat their inner neighbour's mean).

    ``values`` is a slab of a region ``depth`` rows deep, with ``before`` and ``after`` (0 or 1)
    rows of the region beyond the slab's own on either side, which only feed the slab's means.
    """
    if min(depth, *values.shape[3:]) < 3:
        return values[..., before : values.shape[2] - after, :, :]
    summed = values[..., :-2, :, :] + values[..., 1:-1, :, :]
    summed += values[..., 2:, :, :]
    rows = summed[..., :-2, :] + summed[..., 1:-1, :]
    rows += summed[..., 2:, :]
    cube = rows[..., :-2] + rows[..., 1:-1]
    cube += rows[..., 2:]
    return F.pad(cube.div_(27), (1, 1, 1, 1, 1 - before, 1 - after), mode="replicate")


def _rician_average(image: torch.Tensor, variance: torch.Tensor, squared_radius: int, pair_weight: PairWeight) -> torch.Tensor:
    squared = image * image
    total = squared.clone()
    weight_sum = torch.ones_like(image)
    if image.device.type == "cpu":
        # A slab reaches its neighbours' rows; at least reach + 2 rows keep every slab's overlap
        # with the volume at least two rows deep.
        reach = int(squared_radius**0.5)
        slabs = _slabs(image.shape[2], reach + 2, image.numel() // image.shape[2])
    else:
        # On a GPU, slabs would only multiply the kernel launches: the whole volume is one slab.
        slabs = [(0, image.shape[2])]

    def average_slabs(slabs, next_run_started=None, started=None):
        """Add every offset's pairs on each slab in turn; set ``started`` once past the first
        slab (or failed), wait for ``next_run_started`` before the last."""
        try:
            for index, rows in enumerate(slabs):
                if index == len(slabs) - 1 and next_run_started is not None:
                    next_run_started.wait()
                for offset in neighbour_offsets(squared_radius):
                    here, there = _overlap(image.shape[2:], offset, rows)
                    weight = pair_weight(offset, here, there)
                    total[here].addcmul_(weight, squared[there])
                    total[there].addcmul_(weight, squared[here])
                    weight_sum[here].add_(weight)
                    weight_sum[there].add_(weight)
                if index == 0 and started is not None:
                    started.set()
        finally:
            if started is not None:
                started.set()

    # One thread per core, each on its own run of slabs with single-threaded operations: a
    # parallel region per operation would be thousands of them, each waiting for the slowest
    # core, which stalls whenever another process holds one. A run's last slab also adds to the
    # first rows of the next run, so it waits until that run is past its first slab.
    workers = min(torch.get_num_threads(), len(slabs))
    if workers < 2 or torch.is_grad_enabled():
        average_slabs(slabs)
    else:
        bounds = [len(slabs) * index // workers for index in range(workers + 1)]
        runs = [slabs[start:stop] for start, stop in itertools.pairwise(bounds)]
        started = [threading.Event() for _ in runs]
        inference = torch.is_inference_mode_enabled()

        def average_run(number):
            # Grad and inference modes belong to each thread: the caller's are passed on.
            with torch.no_grad(), torch.inference_mode(inference):
                average_slabs(runs[number], started[number + 1] if number + 1 < workers else None, started[number])

        with one_thread_per_operation(), ThreadPoolExecutor(workers) as pool:
            for done in [pool.submit(average_run, number) for number in range(workers)]:
                done.result()
    return torch.sqrt(torch.clamp(total / weight_sum - 2 * variance, min=1e-8))


def patch_means(image: torch.Tensor, variance: torch.Tensor, squared_radius: int = 5, width: float = 0.8) -> torch.Tensor:
    """Non-local means with 3x3x3 patches over a sphere of neighbours.

    Two patches of the same anatomy differ by noise alone, 2σ² per voxel on average; only what
    exceeds that counts, in units of ``width``² σ².
    """
    scale = -1 / (width * width * variance)
    depth = image.shape[2]

    def pair_weight(offset, here, there):
        # The patches of a slab's edge rows reach one row beyond it, where the overlap goes on.
        first, last = max(0, -offset[0]), depth - max(0, offset[0])
        before, after = int(here[1].start > first), int(here[1].stop < last)
        wide_here = (Ellipsis, slice(here[1].start - before, here[1].stop + after), *here[2:])
        wide_there = (Ellipsis, slice(there[1].start - before, there[1].stop + after), *there[2:])
        # In place: the input image never carries gradients, and this runs for every offset.
        distance = _patch_mean((image[wide_here] - image[wide_there]).square_(), last - first, before, after)
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
    """Means of ``image`` over neighbours within ``squared_radius`` (voxels²) whose ``guide``
    values are within about ``width`` σ of the voxel's own, and nearer neighbours more (a factor
    exp(-``spatial_decay`` |d|²))."""
    scale = -1 / (width * width * variance)

    def pair_weight(offset, here, there):
        weight = guide[here] - guide[there]
        nearness = -spatial_decay * sum(v * v for v in offset)
        # In place on the difference, a tensor of its own (autograd follows these in-place steps).
        return weight.square_().mul_(scale).add_(nearness).clamp_(min=EXP_FLOOR).exp_()

    return _rician_average(image, variance, squared_radius, pair_weight)
