"""A Wiener step on groups of matched windows: BM3D's second step (BM4D's, for volumes), with a
pilot estimate (by default the patch-means guide, ``network.patch_means_guide``; with
--preserve-detail --thorough the network's output): the pipeline's denoising step, see
TRAINING_RUNS.md, "The grouped step by default".

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
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .dct_wiener import BLOCK, dct_basis, overlap_sums, rician_amplitude, rician_mean
from .worker_threads import one_thread_per_operation

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
# The least share of the noise a window frequency is taken to hold (``dct_noise_shares``): an
# estimated correlation need not be a valid one, and a share of 0 would keep that frequency whole.
MIN_NOISE_SHARE = 0.02


def dct_noise_shares(correlation: np.ndarray) -> np.ndarray:
    """What each frequency of an orthonormal DCT over ``len(correlation)`` voxels keeps of the
    variance of noise whose correlation at a lag of k voxels is ``correlation[k]`` (1 at lag 0):
    1 each for white noise; they add up to the length.

    >>> dct_noise_shares(np.eye(1, 4)[0]).round(3).tolist()
    [1.0, 1.0, 1.0, 1.0]
    >>> dct_noise_shares(np.sinc(np.arange(4) / 2)).round(3).tolist()  # zero-filled 2x
    [1.849, 1.538, 0.576, 0.038]
    """
    basis = dct_basis(len(correlation)).numpy()
    lags = np.abs(np.subtract.outer(np.arange(len(correlation)), np.arange(len(correlation))))
    return np.einsum("ki,ij,kj->k", basis, np.asarray(correlation, dtype=np.float64)[lags], basis)


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
    noise_correlation: Optional[Sequence[np.ndarray]] = None,
) -> torch.Tensor:
    """The grouped Wiener estimate of the amplitude under ``noisy`` (a 3-D magnitude volume), with
    groups matched and gains taken on ``pilot`` (an amplitude estimate of the same shape).
    ``progress`` is told the share done after each chunk of reference windows, on the calling
    thread (and may raise to stop). ``noise_correlation``: per axis of ``noisy``, the noise's
    correlation at lags 0 to ``block`` - 1 where it is not white (zero-filled, ``zero_filling``;
    low-passed by a k-space window, ``noise.NoiseEstimate.correlation``): each window
    coefficient's noise variance is then sigma² times the product of its frequencies'
    ``dct_noise_shares`` along the axes (at least MIN_NOISE_SHARE each), not sigma²."""
    extra, corners = reference_grid(noisy.shape, block, step)
    # The workers share out the reference planes along the first axis, so the axis with the most
    # goes first (not a thick-slice volume's few slices); by the shape alone, so that the output
    # does not depend on the number of cores (windows that tie, in replicated edges, are picked in
    # another order along another axis).
    first = max(range(3), key=lambda axis: (len(corners[axis]), axis == 0))
    order = [first, *(axis for axis in range(3) if axis != first)]
    noisy, pilot = noisy.permute(order), pilot.permute(order)
    extra, corners = [extra[axis] for axis in order], [corners[axis] for axis in order]
    padded = (replicate_padded(volume, extra, radius) for volume in (noisy.float(), rician_mean(pilot.float(), sigma)))
    coefficient_noise = None
    if noise_correlation is not None:
        shares = [torch.from_numpy(np.maximum(dct_noise_shares(noise_correlation[axis]), MIN_NOISE_SHARE)) for axis in order]
        coefficient_noise = (sigma * sigma * torch.kron(torch.kron(shares[0], shares[1]), shares[2])).float().to(noisy.device)
    groups = WindowGroups(*padded, sigma, block, step, radius, min(matches, (2 * radius + 1) ** 3), coefficient_noise)
    shape = groups.noisy.shape
    threads = torch.get_num_threads() if noisy.device.type == "cpu" else 1
    total, corner_weight = _filter_in_phases(groups, corners, threads, progress)
    # Each full-size array is let go as soon as it has served (the padded copies, the weights):
    # on a 512³ volume each is half a gigabyte.
    del groups
    weight_sum = overlap_sums(corner_weight.reshape(shape), block, 1)[: shape[0], : shape[1], : shape[2]]
    del corner_weight
    inside = tuple(slice(radius, radius + n) for n in noisy.shape)
    back = [order.index(axis) for axis in range(3)]
    estimate = total.reshape(shape).div_(weight_sum)[inside].permute(back).contiguous()
    del total, weight_sum
    return rician_amplitude(estimate, sigma)


def reference_grid(shape, block: int, step: int) -> tuple[list[int], list[torch.Tensor]]:
    """(voxels added at the end of each axis, the reference windows' first corners along each).

    The volume is padded by the search radius on every side, so that every candidate window lies
    inside (replicated edges are candidates too), and by these voxels more at the end, so that
    the references, ``step`` apart, cover every voxel, and a window fits along an axis thinner
    than it (a few slices).

    >>> extra, corners = reference_grid((12, 3, 10), block=4, step=3)
    >>> extra, [c.tolist() for c in corners]
    ([1, 1, 0], [[0, 3, 6, 9], [0], [0, 3, 6]])
    """
    extra = [max(block - n, 0) + (-(max(n, block) - block)) % step for n in shape]
    return extra, [torch.arange(0, n + n_extra - block + 1, step) for n, n_extra in zip(shape, extra)]


def replicate_padded(volume: torch.Tensor, extra: list[int], radius: int) -> torch.Tensor:
    """``volume`` with its edges replicated ``radius`` voxels out on every side and ``extra``
    (``reference_grid``) more at the end of each axis."""
    pad = [v for n_extra in reversed(extra) for v in (radius, radius + n_extra)]
    return F.pad(volume[None, None], pad, mode="replicate")[0, 0].contiguous()


def _filter_in_phases(groups: WindowGroups, corners: list[torch.Tensor], threads: int,
                      progress: Optional[Callable[[float], None]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The sums ``WindowGroups.filter`` adds into (flat: the estimates, the weights at the windows'
    corners) over every reference window at ``corners`` (along D, H, W).

    On a CPU one thread per core (``threads``), each on its own run of reference planes with
    single-threaded operations (as the non-local means): the operations on a chunk are too small
    to share well."""
    device = groups.noisy.device
    phases = worker_phases(len(corners[0]), threads, groups.block, groups.step, groups.radius)
    workers = len(phases[0])
    total = torch.zeros(groups.noisy.numel(), device=device)
    corner_weight = torch.zeros_like(total)
    per_slab, chunk = references_per_slab_and_chunk(device)
    done = queue.SimpleQueue()  # references filtered, from the workers; None when one ends
    stop = threading.Event()
    inference = torch.is_inference_mode_enabled()

    def filter_run(planes):
        try:
            with torch.no_grad(), torch.inference_mode(inference):
                run = [corners[0][planes[0]:planes[1]], corners[1], corners[2]]
                groups.filter(run, total, corner_weight, per_slab, chunk, done.put, stop)
        except BaseException:
            stop.set()
            raise
        finally:
            done.put(None)

    with one_thread_per_operation() if workers > 1 else nullcontext():
        with ThreadPoolExecutor(workers) as pool:
            filtered, total_references = 0, len(corners[0]) * len(corners[1]) * len(corners[2])
            try:
                for runs in phases:
                    running = [pool.submit(filter_run, planes) for planes in runs]
                    for _ in running:
                        while (count := done.get()) is not None:
                            if progress is not None:
                                filtered += count
                                progress(filtered / total_references)
                    for worker in running:
                        worker.result()
            finally:
                stop.set()
    return total, corner_weight


def worker_phases(planes: int, threads: int, block: int, step: int, radius: int) -> list[list[tuple[int, int]]]:
    """Runs of reference planes (first, end) for up to ``threads`` workers that add into one pair
    of sums, in phases: within a phase no two runs' windows share a plane.

    The last planes of each run but the last (its seam) have windows that reach the next run's,
    so they are filtered in a second phase, after every run's others; the first phase's runs are
    of one length, so that no worker waits long for the others.

    >>> worker_phases(20, 2, block=4, step=3, radius=2)
    [[(0, 9), (11, 20)], [(9, 11)]]
    """
    # A reference plane's windows reach 2 * radius + block planes from its corner: into the next
    # run's when it is one of the last ``seam`` planes of its run. A run must be at least a seam
    # long besides its own seam, so that the seams on either side of it do not meet.
    seam = -(-(2 * radius + block) // step) - 1
    workers = max(1, min(threads, (planes + seam) // max(2 * seam, 1)))
    first_phase = planes - (workers - 1) * seam
    ends = [first_phase * (index + 1) // workers + index * seam for index in range(workers)]
    starts = [0] + [end + seam for end in ends[:-1]]
    seams = [(end, end + seam) for end in ends[:-1]] if seam else []  # windows that do not overlap need none
    return [list(zip(starts, ends)), seams]


class WindowGroups:
    """Groups of windows of ``noisy`` (padded by ``radius``) matched on ``expected`` (the pilot
    through the Rician mean, padded alike), filtered and added to running sums."""

    def __init__(self, noisy: torch.Tensor, expected: torch.Tensor, sigma: float, block: int, step: int,
                 radius: int, matches: int, coefficient_noise: torch.Tensor | None = None):
        device = noisy.device
        self.expected, self.sigma, self.matches = expected, sigma, matches
        # Each window coefficient's noise variance where the noise is not white; else sigma².
        self.coefficient_noise = coefficient_noise
        self.block, self.step, self.radius = block, step, radius
        self.offsets = torch.tensor(list(itertools.product(range(-radius, radius + 1), repeat=3)))
        self.itself = (self.offsets == 0).all(dim=1)
        self.strides = torch.tensor(noisy.stride())
        grid = torch.stack(torch.meshgrid(*[torch.arange(block)] * 3, indexing="ij"), -1).reshape(-1, 3)
        self.in_window = (grid @ self.strides).to(device)
        self.noisy = noisy
        self.row = _row_length(block, device)
        self.rows_in_window = (grid[grid[:, 2] % self.row == 0] @ self.strides).to(device)
        self.window_transform = torch.kron(torch.kron(dct_basis(block), dct_basis(block)), dct_basis(block)).to(device)
        self.group_transform = dct_basis(matches).to(device)

    def transform(self, windows):  # (window in group, reference, voxel) -> their coefficients
        return torch.einsum("kj,jrc->krc", self.group_transform, windows @ self.window_transform.T)

    def wiener(self, coefficients: torch.Tensor, pilot_coefficients: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(each window's estimate, as ``coefficients``: window in group, reference, voxel; each
        group's weight): every noisy coefficient kept in the share P² / (P² + σ²) of the pilot's
        P (σ² each coefficient's own where the noise is not white), the group back to windows,
        weighed by BM3D's 1 / Σ gain²."""
        power = pilot_coefficients.square()
        gain = power / (power + (self.sigma * self.sigma if self.coefficient_noise is None else self.coefficient_noise))
        weight = gain.square().sum(dim=(0, 2)).clamp(min=1e-3).reciprocal()
        return torch.einsum("kj,krc->jrc", self.group_transform, coefficients * gain) @ self.window_transform, weight

    def nearest(self, corners: list[torch.Tensor]) -> torch.Tensor:
        """(match, reference): each reference window's group at ``corners`` (along D, H, W), as
        indices into ``offsets``, nearest first, the reference itself heading it."""
        distance = window_distances(self.expected, corners, self.offsets, self.block, self.step, self.radius)
        distance[self.itself] = -1  # the reference heads its group even among ties (a flat background)
        return distance.flatten(1).topk(self.matches, dim=0, largest=False).indices.cpu()

    def _gather(self, rows, window_corners):
        """The windows at ``window_corners`` (flat indices into ``rows``) from ``_rows``."""
        return rows[window_corners[..., None] + self.rows_in_window].view(torch.float32)

    def filter(self, corners: list[torch.Tensor], total: torch.Tensor, corner_weight: torch.Tensor,
               per_slab: int, chunk: int, done: Callable[[int], None], stop: threading.Event) -> None:
        """Filter the groups of the reference windows at ``corners`` (along D, H, W), adding each
        window's estimate times its group's weight to ``total`` (flat, per voxel) and the weight
        to ``corner_weight`` (at the window's first corner); ``done`` hears how many references
        each chunk filtered. Returns early once ``stop`` is set."""
        device, radius = total.device, self.radius
        # Slabs of about ``per_slab`` references, of one size: a slab of a plane or two would cost
        # the distances of its 2 * radius + block planes of margin for little.
        slabs = -(-len(corners[0]) * len(corners[1]) * len(corners[2]) // per_slab)
        planes = max(1, -(-len(corners[0]) // max(slabs, 1)))
        for first in range(0, len(corners[0]), planes):
            slab = [corners[0][first:first + planes], corners[1], corners[2]]
            nearest_in_slab = self.nearest(slab)
            references_in_slab = torch.stack(torch.meshgrid(*slab, indexing="ij"), -1).reshape(-1, 3) + radius
            # The planes this slab's windows lie in, as rows (a copy: only the slab's, so that a
            # large volume needs no rows of all of it).
            planes_in_slab = slice(int(slab[0][0]), int(slab[0][-1]) + 2 * radius + self.block)
            noisy_rows, expected_rows = (_rows(volume[planes_in_slab], self.row) for volume in (self.noisy, self.expected))
            slab_start = planes_in_slab.start * int(self.strides[0])
            for start in range(0, len(references_in_slab), chunk):
                if stop.is_set():
                    return
                nearest = self.offsets[nearest_in_slab[:, start:start + chunk]]
                window_corners = ((references_in_slab[None, start:start + chunk] + nearest) @ self.strides).to(device)
                estimate, weight = self.wiener(self.transform(self._gather(noisy_rows, window_corners - slab_start)),
                                               self.transform(self._gather(expected_rows, window_corners - slab_start)))
                voxels = window_corners[..., None] + self.in_window
                total.index_add_(0, voxels.reshape(-1), estimate.mul_(weight[:, None]).reshape(-1))
                corner_weight.index_add_(0, window_corners.reshape(-1), weight.expand(len(nearest), -1).reshape(-1))
                done(nearest.shape[1])


# A row of a window's voxels along the last axis as one element of this type, so that gathering
# a window moves a few wide elements instead of every voxel (2.5 times as fast on a CPU). Not on
# a GPU, whose gathers are fast anyway: the rows take ``block`` times the memory of the slab's planes.
_ROW_TYPES = {2: torch.float64, 4: torch.complex128}


def _row_length(block: int, device: torch.device) -> int:
    """Voxels gathered as one element: a window's row on a CPU where ``_ROW_TYPES`` has its type, else 1."""
    return block if block in _ROW_TYPES and device.type == "cpu" else 1


def _rows(volume: torch.Tensor, length: int) -> torch.Tensor:
    """The ``length`` voxels of ``volume`` (float32, contiguous) along the last axis from each
    flat index on, each row one element of ``_ROW_TYPES[length]``; for a length of 1, ``volume``
    flattened."""
    flat = volume.reshape(-1)
    if length == 1:
        return flat
    return flat.as_strided((flat.numel() - length + 1, length), (1, 1)).contiguous().view(_ROW_TYPES[length]).reshape(-1)


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


def window_distances(expected_padded: torch.Tensor, corners: list[torch.Tensor], offsets: torch.Tensor,
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
