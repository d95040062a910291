"""The scan cache for training at archive scale: the same batches as scans held in memory, prepared
once, shared by ranks, memory-mapped, and never trusted once a scan has changed."""

import errno
import os
import pickle
import time

import numpy as np
import pytest
import torch

from conftest import phantom, write_volume

from MRIDenoiseLib.input_checks import InputError
from MRIDenoiseLib.training import scan_cache
from MRIDenoiseLib.training.data import PatchSampler, load_scan, load_scans
from MRIDenoiseLib.training.loop import batch_stream


def _folder(tmp_path, count=3):
    """Scans of 2 mm, 1 mm and 0.7 mm voxels (the last is resampled to 1 mm when prepared)."""
    data = tmp_path / "data"
    data.mkdir()
    spacings = [(2.0, 2.0, 2.0), (1.0, 1.0, 1.0), (0.7, 0.7, 0.7)]
    return [write_volume(data / f"IXI{index:03d}-HH-1_T1.nii.gz", phantom((36, 40, 32), index), spacings[index % 3])
            for index in range(1, count + 1)]


@pytest.fixture
def loads(monkeypatch):
    """The scans ``load_scan`` is asked for by the cache, in order."""
    asked = []

    def counting_load(path):
        asked.append(path)
        return load_scan(path)

    monkeypatch.setattr(scan_cache, "load_scan", counting_load)
    return asked


def _no_skips(path, reason):
    raise AssertionError(f"{path} skipped: {reason}")


def test_cached_scans_give_the_batches_of_scans_in_memory(tmp_path):
    paths = _folder(tmp_path)
    in_memory = load_scans(paths, _no_skips)
    cached = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)
    assert [scan.spacing for scan in cached] == [scan.spacing for scan in in_memory]
    assert all(isinstance(scan.as_sample()["target"], np.memmap) for scan in cached)
    # A worker process is sent file names, not volumes.
    assert len(pickle.dumps(cached[0])) < 1000 < in_memory[0].volume.nbytes

    expected = PatchSampler(in_memory, patch=16, scans_per_step=2, seed=5, lesions=True)
    drawn = PatchSampler(cached, patch=16, scans_per_step=2, seed=5, lesions=True)
    for step in range(4):
        for a, b in zip(expected.batch(step), drawn.batch(step)):
            assert torch.equal(a, b)
    for a, b in zip(expected.batch(9), next(batch_stream(drawn.batch, 9, 10, workers=1))):
        assert torch.equal(a, b)


def test_a_second_start_reads_the_cache_and_a_changed_scan_is_prepared_again(tmp_path, loads):
    paths = _folder(tmp_path)
    first = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)
    assert loads == paths
    again = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)
    assert again == first and loads == paths

    write_volume(paths[1], 2 * phantom((36, 40, 32), 2))
    changed = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)
    assert loads == [*paths, paths[1]]
    assert changed[0] == first[0] and changed[1] != first[1]
    assert np.array_equal(changed[1].as_sample()["target"], load_scan(paths[1]).volume)


def test_each_rank_prepares_its_share_first_then_what_is_missing(tmp_path, loads):
    paths = _folder(tmp_path, count=4)
    second_rank = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips, rank=1, world_size=2)
    assert loads == [paths[1], paths[3], paths[2], paths[0]]
    first_rank = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips, rank=0, world_size=2)
    assert first_rank == second_rank and len(loads) == 4
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".json"] * 4 + [".npy"] * 8


def test_an_entry_damaged_after_it_was_written_is_prepared_again(tmp_path, loads):
    paths = _folder(tmp_path, count=4)
    first = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)
    volume_file = first[0].volume_file
    volume_file.write_bytes(volume_file.read_bytes()[:1000])  # truncated (a lost node, a full disk, a hand)
    first[1].mask_file.unlink()
    record = first[2].volume_file.with_name(first[2].volume_file.name.replace(".volume.npy", ".json"))
    record.write_text("")
    again = scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)
    assert again == first and loads == [*paths, *paths[:3]]
    for scan, path in zip(again, paths):
        assert np.array_equal(scan.as_sample()["target"], load_scan(path).volume)


def test_a_scan_replaced_by_a_copy_with_its_size_and_times_is_prepared_again(tmp_path, loads):
    scan = write_volume(tmp_path / "IXI001-HH-1_T1.nii", phantom((36, 40, 32), 1))  # uncompressed: sizes match
    first = scan_cache.prepared_scans([scan], tmp_path / "cache", _no_skips)
    status = scan.stat()
    replacement = write_volume(tmp_path / "replacement.nii", phantom((36, 40, 32), 2))
    assert replacement.stat().st_size == status.st_size
    os.utime(replacement, ns=(status.st_atime_ns, status.st_mtime_ns))  # as cp -p or tar would
    os.replace(replacement, scan)
    again = scan_cache.prepared_scans([scan], tmp_path / "cache", _no_skips)
    assert again != first and len(loads) == 2
    assert np.array_equal(again[0].as_sample()["target"], load_scan(scan).volume)


def test_entries_get_the_permissions_of_any_new_file(tmp_path):
    paths = _folder(tmp_path, count=1)
    previous = os.umask(0o002)  # a lab group sharing one cache
    try:
        scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)
    finally:
        os.umask(previous)
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "cache").iterdir()} == {"0o664"}


def test_broken_scans_are_skipped_at_every_start_and_never_cached(tmp_path, loads):
    paths = _folder(tmp_path)
    paths[0].write_bytes(paths[0].read_bytes()[:500])
    for start in range(2):
        reasons = []
        kept = scan_cache.prepared_scans(paths, tmp_path / "cache", lambda path, reason: reasons.append((path, reason)))
        assert len(kept) == 2 and [path for path, _ in reasons] == [paths[0]]
        assert "not a readable scan" in reasons[0][1]
    assert loads == [*paths, paths[0]]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_temporaries_a_killed_preparation_left_are_removed_once_stale(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    stale, recent = cache / ".a.volume.npy.1.tmp", cache / ".b.volume.npy.2.tmp"
    for leftover in (stale, recent):
        leftover.write_bytes(b"half a volume")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert scan_cache.remove_stale_temporaries(cache) == 1
    assert not stale.exists() and recent.exists()


def test_a_cache_that_cannot_be_written_is_refused_in_one_line(tmp_path, monkeypatch):
    paths = _folder(tmp_path, count=1)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(InputError, match="cannot keep the scan cache there"):
        scan_cache.prepared_scans(paths, tmp_path / "a_file", _no_skips)

    def disk_full(destination, content):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(scan_cache, "_write_into_place", disk_full)
    with pytest.raises(InputError, match="cannot use the scan cache .No space left on device."):
        scan_cache.prepared_scans(paths, tmp_path / "cache", _no_skips)


def test_the_entries_of_earlier_versions_of_the_scans_are_removed_and_those_of_other_scans_kept(tmp_path):
    paths, cache = _folder(tmp_path), tmp_path / "cache"
    first = scan_cache.prepared_scans(paths, cache, _no_skips)
    write_volume(paths[1], 2 * phantom((36, 40, 32), 2))
    write_volume(paths[2], 2 * phantom((36, 40, 32), 3))
    # A run on the first two scans only: the third, edited too, is not its to clean.
    again = scan_cache.prepared_scans(paths[:2], cache, _no_skips)
    assert again[0] == first[0] and not first[1].volume_file.exists() and not first[1].mask_file.exists()
    assert first[2].volume_file.exists() and len(list(cache.glob("*.json"))) == 3
    scan_cache.prepared_scans(paths, cache, _no_skips)
    assert not first[2].volume_file.exists() and len(list(cache.glob("*.json"))) == 3
    assert len(list(cache.iterdir())) == 9


def test_two_processes_removing_the_same_outdated_entries_at_once_do_not_fail(tmp_path, monkeypatch):
    paths, cache = _folder(tmp_path, count=2), tmp_path / "cache"
    scan_cache.prepared_scans(paths, cache, _no_skips)
    for index, path in enumerate(paths):
        write_volume(path, 2 * phantom((36, 40, 32), index))
    recorded_source = scan_cache._recorded_source
    removed_by_the_other = []

    def the_other_cleans_up_meanwhile(record):
        """Between this process's reading of the first record and its removing that entry, the
        other removes every outdated entry."""
        source = recorded_source(record)
        if not removed_by_the_other:
            removed_by_the_other.append(None)
            removed_by_the_other.append(scan_cache.remove_outdated_entries(cache, paths))
        return source

    monkeypatch.setattr(scan_cache, "_recorded_source", the_other_cleans_up_meanwhile)
    assert scan_cache.remove_outdated_entries(cache, paths) == 0
    assert removed_by_the_other[1] == 2 and list(cache.iterdir()) == []


def test_an_entry_half_removed_by_a_killed_process_is_removed_at_the_next_start(tmp_path):
    paths, cache = _folder(tmp_path, count=1), tmp_path / "cache"
    first = scan_cache.prepared_scans(paths, cache, _no_skips)
    first[0].volume_file.unlink()  # killed after removing the volume, before the record
    write_volume(paths[0], 2 * phantom((36, 40, 32), 1))
    assert scan_cache.remove_outdated_entries(cache, paths) == 1
    assert list(cache.iterdir()) == []


def test_a_run_whose_entry_a_later_start_removed_goes_on_with_the_scan_as_it_is_now(tmp_path):
    paths, cache = _folder(tmp_path, count=1), tmp_path / "cache"
    running = scan_cache.prepared_scans(paths, cache, _no_skips)[0]
    before = np.array(running.as_sample()["target"])
    write_volume(paths[0], phantom((36, 40, 32), 7))  # another head
    scan_cache.prepared_scans(paths, cache, _no_skips)  # a later start removes the running run's entry
    assert not running.volume_file.exists()
    now = running.as_sample()["target"]
    np.testing.assert_array_equal(now, load_scan(paths[0]).volume)
    assert not np.array_equal(now, before)


def test_only_rank_0_removes_outdated_entries(tmp_path):
    paths, cache = _folder(tmp_path, count=1), tmp_path / "cache"
    first = scan_cache.prepared_scans(paths, cache, _no_skips)[0]
    write_volume(paths[0], phantom((36, 40, 32), 7))
    scan_cache.prepared_scans(paths, cache, _no_skips, rank=1, world_size=2)
    assert first.volume_file.exists()
    scan_cache.prepared_scans(paths, cache, _no_skips, rank=0, world_size=2)
    assert not first.volume_file.exists()
