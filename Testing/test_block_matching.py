"""The grouped Wiener step (BM4D's second stage, matched on a pilot estimate): the pipeline's
denoising step, on the patch-means pilot by default and on the network's output with
--preserve-detail; test_thorough.py runs it through the pipeline."""

import itertools

import numpy as np
import pytest
import torch

from conftest import phantom

from MRIDenoiseLib import block_matching
from MRIDenoiseLib.block_matching import block_matched_wiener
from MRIDenoiseLib.dct_wiener import dct_wiener
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.worker_threads import one_thread_per_operation

SIGMA = 6.0


def noisy_phantom(shape, seed):
    clean = torch.from_numpy(phantom(shape, 1))
    return clean, torch.from_numpy(add_rician_noise(clean.numpy(), SIGMA, np.random.default_rng(seed)))


def test_every_voxel_is_filtered_whatever_the_chunks(monkeypatch):
    # An odd shape, and a flat background where every candidate window ties with the reference.
    clean, noisy = noisy_phantom((23, 26, 19), 2)
    whole = block_matched_wiener(noisy, clean, SIGMA)
    monkeypatch.setattr(block_matching, "REFERENCES_PER_SLAB", 1)  # one plane of 8 x 6 references
    monkeypatch.setattr(block_matching, "REFERENCES_PER_CHUNK", 40)  # in two chunks
    shares = []
    chunked = block_matched_wiener(noisy, clean, SIGMA, progress=shares.append)
    assert whole.shape == noisy.shape and bool(torch.isfinite(whole).all())
    # Equal distances may pick different windows in another layout: a dark voxel differs by 1e-3 (of a sigma of 6).
    torch.testing.assert_close(chunked, whole, atol=2e-3, rtol=0)
    # the longest axis first, 26 voxels: 9 planes of references, at 0, 3, ..., 24
    assert len(shares) == 18 and shares == sorted(shares) and shares[-1] == 1.0


def test_a_volume_of_fewer_slices_than_a_window_is_filtered():
    clean, noisy = noisy_phantom((3, 40, 36), 3)  # as nibabel's functional.nii: 3 slices
    filtered = block_matched_wiener(noisy, clean, SIGMA)
    assert filtered.shape == noisy.shape
    assert float((filtered - clean).square().mean()) < 0.25 * float((noisy - clean).square().mean())  # measured 0.14


def test_with_a_perfect_pilot_grouping_removes_more_noise_than_the_windows_alone():
    clean, noisy = noisy_phantom((32, 36, 34), 1)
    inside = torch.from_numpy(head_mask(clean.numpy()))

    def error(volume):
        return float((volume - clean)[inside].square().mean())

    grouped, windows_alone = block_matched_wiener(noisy, clean, SIGMA), dct_wiener(noisy, clean, SIGMA)
    assert error(grouped) < 0.95 * error(windows_alone)  # measured 0.269 and 0.285 of the noisy input's error
    assert error(grouped) < 0.3 * error(noisy)


@pytest.mark.parametrize("threads", [1, 2, 3, 16])
@pytest.mark.parametrize("block, step, radius", [(4, 3, 2), (4, 3, 3), (4, 2, 1), (4, 4, 0), (2, 1, 1)])
def test_workers_in_a_phase_never_add_into_the_same_plane(threads, block, step, radius):
    for planes in range(1, 70):
        phases = block_matching.worker_phases(planes, threads, block, step, radius)
        runs = sorted(run for phase in phases for run in phase)
        assert [plane for first, end in runs for plane in range(first, end)] == list(range(planes))
        assert all(end > first for first, end in runs)  # no worker started for nothing
        assert 1 <= len(phases[0]) <= threads
        for phase in phases:  # the padded planes each run's windows lie in, [corner, last corner + reach)
            spans = sorted((first * step, (end - 1) * step + 2 * radius + block) for first, end in phase)
            assert all(stop <= start for (_, stop), (start, _) in itertools.pairwise(spans))
    assert len(block_matching.worker_phases(61, 16, 4, 3, 3)[0]) == 10  # runs of at least two seams


@pytest.mark.parametrize("workers", [2, 4])
def test_one_thread_per_core_gives_what_one_thread_gives(workers):
    # 17 planes of references: runs of 4 or more, so that 4 workers run, with 3 seams between them
    clean, noisy = noisy_phantom((52, 26, 23), 4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(workers)  # each worker on its own planes of references
        shared = block_matched_wiener(noisy, clean, SIGMA)
        torch.set_num_threads(1)
        alone = block_matched_wiener(noisy, clean, SIGMA)
    finally:
        torch.set_num_threads(threads)
    assert torch.get_num_threads() == threads
    torch.testing.assert_close(shared, alone, atol=1e-3, rtol=0)


def test_a_volume_of_few_slices_is_shared_out_along_its_longest_axis(monkeypatch):
    # 3 planes of references along the first axis (one worker there), 13 along the second
    clean, noisy = noisy_phantom((9, 40, 26), 3)
    runs = []
    filter_run = block_matching.WindowGroups.filter
    monkeypatch.setattr(block_matching.WindowGroups, "filter", lambda self, corners, *args: runs.append(len(corners[0])) or
                        filter_run(self, corners, *args))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        shared = block_matched_wiener(noisy, clean, SIGMA)
        assert runs == [5, 5, 3]  # two workers on runs of 5 planes, then the seam of 3 between them
        torch.set_num_threads(1)
        alone = block_matched_wiener(noisy, clean, SIGMA)
    finally:
        torch.set_num_threads(threads)
    # The axis is chosen by the shape, not the cores: windows of the flat phantom tie, and another
    # order of the axes would pick others among equals.
    torch.testing.assert_close(shared, alone, atol=1e-3, rtol=0)


class Stop(Exception):
    pass


def test_a_progress_that_raises_stops_every_worker(monkeypatch):
    monkeypatch.setattr(block_matching, "REFERENCES_PER_CHUNK", 9)
    clean, noisy = noisy_phantom((40, 26, 23), 5)  # 14 planes of 9 x 8 references: 112 chunks
    threads, shares, gathered, stops = torch.get_num_threads(), [], [], []
    gather, filter_run = block_matching.WindowGroups._gather, block_matching.WindowGroups.filter

    def filter_and_keep_its_stop(self, *args):
        stops.append(args[-1])
        return filter_run(self, *args)

    def gather_after_the_first_few_once_stopped(self, *args):
        # However long a busy machine keeps the calling thread from the progress, the workers
        # wait for the stop (at most a moment each, so that a worker that never stops fails fast).
        gathered.append(1)
        if len(gathered) > 4:
            stops[0].wait(timeout=0.2)
        return gather(self, *args)

    monkeypatch.setattr(block_matching.WindowGroups, "filter", filter_and_keep_its_stop)
    monkeypatch.setattr(block_matching.WindowGroups, "_gather", gather_after_the_first_few_once_stopped)

    def stop_at_the_second_chunk(share):
        shares.append(share)
        if len(shares) == 2:
            raise Stop()

    torch.set_num_threads(2)
    try:
        with pytest.raises(Stop):
            block_matched_wiener(noisy, clean, SIGMA, progress=stop_at_the_second_chunk)
    finally:
        torch.set_num_threads(threads)
    assert len(shares) == 2 and torch.get_num_threads() == threads
    assert len(gathered) < 40  # two a chunk: the workers stopped within a few chunks, not after all 112


def test_windows_gathered_voxel_by_voxel_give_what_rows_give(monkeypatch):
    """A GPU gathers every voxel of a window (no rows of voxels as one wide element): the same windows."""
    clean, noisy = noisy_phantom((23, 26, 19), 6)
    by_rows = block_matched_wiener(noisy, clean, SIGMA)
    monkeypatch.setattr(block_matching, "_ROW_TYPES", {})
    torch.testing.assert_close(block_matched_wiener(noisy, clean, SIGMA), by_rows, atol=1e-5, rtol=0)


def test_two_callers_at_once_leave_the_thread_count_as_the_first_found_it():
    """Two pipelines in one process: the second caller finds 1 thread while the first holds it
    there; whichever leaves last puts back the count the first found."""
    threads = torch.get_num_threads()
    first, second = one_thread_per_operation(), one_thread_per_operation()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert torch.get_num_threads() == 1
    second.__exit__(None, None, None)
    assert torch.get_num_threads() == threads
