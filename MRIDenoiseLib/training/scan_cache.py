"""Training scans prepared once into a folder and memory-mapped: restarts in seconds, and the
processes of a node share one copy of the scans in the page cache instead of holding one each.

``load_scan`` (canonical orientation, resampling to 1 mm, head mask) takes about 0.25 s per 2 mm
scan and 2 s per 1 mm one, and every training process holds its result in RAM (about 6.5 and 43 MB).
Over an archive of thousands of scans that is most of an hour and tens of GB per process at every
start and restart. Here each scan is prepared once into ``<key>.volume.npy`` and ``<key>.mask.npy``
beside ``<key>.json`` (its voxel size, source and file sizes); the key changes when the file changes. Files are
written under temporary names and renamed into place, the JSON last, so processes sharing the
folder (the ranks of a torchrun job, a killed job and its requeued successor) never read half an
entry. Scans that cannot be trained on are not cached: each start tries them again. The entries
of earlier versions of the scans a start is given are removed; those of other scans are kept, as
runs on other data sets may share the folder.

>>> import tempfile, nibabel as nib
>>> folder = Path(tempfile.mkdtemp())
>>> nib.save(nib.Nifti1Image(np.arange(16.0**3).reshape(16, 16, 16), np.diag([2, 2, 2, 1])), folder / "scan.nii")
>>> cached = prepared_scans([folder / "scan.nii"], folder / "cache", skipped=print)
>>> cached[0].spacing, cached[0].as_sample()["target"].shape
((2.0, 2.0, 2.0), (1, 16, 16, 16))
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..input_checks import InputError
from ..io import remove_stale, writing_into_place
from .data import load_scan

# Part of every key: raise it when load_scan's preparation changes, so old entries are not used.
PREPARATION_VERSION = 1


@dataclass(frozen=True)
class CachedScan:
    """A prepared scan; its arrays are memory-mapped (copy-on-write) each time a batch draws it,
    so sending one to a worker process sends two file names, not the volume."""

    volume_file: Path
    mask_file: Path
    spacing: tuple[float, float, float]
    source: Path

    def as_sample(self) -> dict:
        try:
            return {"target": np.load(self.volume_file, mmap_mode="c"), "mask": np.load(self.mask_file, mmap_mode="c"),
                    "spacing": self.spacing}
        except FileNotFoundError:
            # The scan was edited since this run started, and a later start removed this entry
            # (remove_outdated_entries): the scan as it is now.
            return _prepare(self.source, self.volume_file.parent).as_sample()


def entry_key(path: Path) -> str:
    """Names the prepared copy of ``path`` as it is now: a new key when the file is replaced or
    edited (the change time too, as a copy that keeps size and modification time still changes it)."""
    status = path.stat()
    identity = f"{PREPARATION_VERSION}|{path.resolve()}|{status.st_size}|{status.st_mtime_ns}|{status.st_ctime_ns}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _write_into_place(destination: Path, content: bytes) -> None:
    """Write ``content`` to ``destination`` under a temporary ``.tmp`` name, renamed when whole."""
    with writing_into_place() as temporary_for:
        Path(temporary_for(destination, ".tmp")).write_bytes(content)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _entry_files(cache_dir: Path, key: str) -> tuple[Path, Path, Path]:
    return cache_dir / f"{key}.volume.npy", cache_dir / f"{key}.mask.npy", cache_dir / f"{key}.json"


def _whole_entry(volume_file: Path, mask_file: Path, record: Path) -> tuple[float, float, float] | None:
    """The voxel size of a complete entry; None if a file is missing, or not the size it was
    written with (truncated, emptied or replaced by hand, or lost with a node)."""
    try:
        entry = json.loads(record.read_text())
        if (volume_file.stat().st_size, mask_file.stat().st_size) != (entry["volume_bytes"], entry["mask_bytes"]):
            return None
        return tuple(float(s) for s in entry["spacing"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):  # a file gone, or not the JSON written here
        return None


def _prepare(path: Path, cache_dir: Path) -> CachedScan:
    """The prepared copy of ``path``, made now unless a whole one is there; InputError if it
    cannot be trained on."""
    try:
        key = entry_key(path)
    except OSError as error:  # gone or unreadable since the folder was listed
        raise InputError(f"{path}: not a readable scan ({error.strerror})") from None
    volume_file, mask_file, record = _entry_files(cache_dir, key)
    spacing = _whole_entry(volume_file, mask_file, record)
    if spacing is None:
        scan = load_scan(path)
        volume, mask = _npy_bytes(scan.volume), _npy_bytes(scan.mask)
        _write_into_place(volume_file, volume)
        _write_into_place(mask_file, mask)
        entry = {"source": str(path.resolve()), "spacing": list(scan.spacing),
                 "volume_bytes": len(volume), "mask_bytes": len(mask)}
        _write_into_place(record, json.dumps(entry).encode())
        spacing = scan.spacing
    return CachedScan(volume_file, mask_file, tuple(float(s) for s in spacing), path)


def remove_stale_temporaries(cache_dir: Path) -> int:
    """Remove the temporary files killed preparations left (``io.remove_stale``); returns how many."""
    return len(remove_stale(cache_dir.glob(".*.tmp")))


def _recorded_source(record: Path) -> str | None:
    """The scan an entry was prepared from, as its record says; None if the record is gone (removed
    by another process) or not one written here."""
    try:
        source = json.loads(record.read_text())["source"]
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
    return source if isinstance(source, str) else None


def _remove_entry(cache_dir: Path, key: str) -> bool:
    """Remove an entry, its record last (a process killed halfway leaves the record, and so the
    entry is found again); returns whether this process removed the record, not another."""
    volume_file, mask_file, record = _entry_files(cache_dir, key)
    volume_file.unlink(missing_ok=True)
    mask_file.unlink(missing_ok=True)
    try:
        record.unlink()
    except FileNotFoundError:
        return False
    return True


def remove_outdated_entries(cache_dir: Path, paths: list[Path]) -> int:
    """Remove the entries of earlier versions of the scans of ``paths`` (edited or replaced since
    they were prepared): those whose record names one of these scans under another key than its
    key now. Entries of other scans are kept. Returns how many this process removed; others
    sharing the folder may remove some of the same at once.

    A record names its scan by its resolved path; records written before it did (by the path as
    given, possibly relative) are matched only where that was the resolved path. A run still
    training from an earlier version (one started before its scan changed) goes on with the scan
    as it is now (``CachedScan.as_sample``).

    >>> import tempfile
    >>> cache = Path(tempfile.mkdtemp())
    >>> scan = cache / "scan.nii"
    >>> _ = scan.write_bytes(b"first version")
    >>> _ = (cache / "0123.json").write_text(json.dumps({"source": str(scan.resolve())}))
    >>> remove_outdated_entries(cache, [scan]), list(cache.glob("*.json"))
    (1, [])
    """
    current_keys = {}
    for path in paths:
        try:
            current_keys[str(path.resolve())] = entry_key(path)
        except OSError:  # gone or unreadable: its entries are left as they are
            continue
    in_use = set(current_keys.values())
    removed = 0
    for record in cache_dir.glob("*.json"):
        key = record.name.removesuffix(".json")
        if key in in_use:
            continue
        source = _recorded_source(record)
        if source in current_keys and _remove_entry(cache_dir, key):
            removed += 1
    return removed


def preparation_order(count: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """Rank r prepares every world_size-th scan from the r-th, then helps the next ranks with
    theirs, each from its far end: a rank done early takes over what that rank would reach last,
    instead of waiting or trailing it through its share, and a cache on each node's own disk is
    filled by that node's ranks alone. No rank ever waits for another.

    >>> preparation_order(6, rank=1, world_size=2), preparation_order(6, rank=2, world_size=3)
    ([1, 3, 5, 4, 2, 0], [2, 5, 3, 0, 4, 1])
    """
    order = list(range(rank, count, world_size))
    for step in range(1, world_size):
        order.extend(reversed(range((rank + step) % world_size, count, world_size)))
    return order


def prepared_scans(paths: list[Path], cache_dir: Path | str, skipped: Callable[[Path, str], None],
                   rank: int = 0, world_size: int = 1) -> list[CachedScan]:
    """The scans of ``paths`` that can be trained on, in order, prepared in ``cache_dir`` where they
    are not yet; ``skipped(path, reason)`` hears of the others, in order (as ``load_scans``). Rank 0
    first removes the entries of earlier versions of these scans (every rank would check every scan
    and record again)."""
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(cache_dir)
        if rank == 0:
            remove_outdated_entries(cache_dir, paths)
    except OSError as error:
        raise InputError(f"{cache_dir}: cannot keep the scan cache there ({error.strerror})") from None
    prepared: dict[int, CachedScan | str] = {}
    for index in preparation_order(len(paths), rank, world_size):
        try:
            prepared[index] = _prepare(paths[index], cache_dir)
        except InputError as error:
            prepared[index] = str(error)
        except OSError as error:  # the cache's disk full, or not ours to read or write: every later scan would fail too
            where = f": {error.filename}" if error.filename else ""
            raise InputError(f"{cache_dir}: cannot use the scan cache ({error.strerror}{where})") from None
    scans = []
    for index, path in enumerate(paths):
        if isinstance(prepared[index], str):
            skipped(path, prepared[index])
        else:
            scans.append(prepared[index])
    return scans
