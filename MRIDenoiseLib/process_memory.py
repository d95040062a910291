"""Memory: process-wide settings for the command and the Slicer worker (separate processes:
``reuse_freed_memory`` is never called inside Slicer's own), and a warning where a volume needs
more than the system has free."""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def reuse_freed_memory() -> None:
    """Have glibc keep freed blocks of up to 32 MiB (a 1 mm brain volume in float32) for the
    next allocation instead of returning them to the kernel.

    The network allocates and frees hundreds of volume-sized tensors; memory fresh from the
    kernel costs a page fault per 4 KiB (about 0.7 s of a 9 s denoising). One arena for every
    thread: the grouped step's worker threads would otherwise allocate from arenas of their own,
    which glibc trims back to the kernel (0.5 s of a 5.7 s denoising). Elsewhere than glibc
    nothing changes.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 1 << 30)
    mallopt(M_ARENA_MAX, 1)


# Peak resident memory of `mridenoise denoise --no-n4` on 2 cores (`/usr/bin/time -v`): 1.36-1.43
# and 2.52-2.56 x 10⁹ bytes for 256³ and 384³ volumes, 4.41 to 4.57 x 10⁹ for 512³ (about 10⁹ bytes and 26
# a voxel), 4.81 x 10⁹ for 512³ through the network (BENCHMARKS.md, "Speed"); rounded up.
BASE_BYTES = 1 << 30
BYTES_PER_VOXEL = 30
# --noise-map holds the map and the volume divided by it (float32 each): 5.41 x 10⁹ bytes at 512³
# where the noise varies, against 4.37 x 10⁹ without it.
NOISE_MAP_BYTES_PER_VOXEL = 8


def available_bytes() -> int | None:
    """The memory the system can give without swapping (Linux's MemAvailable); None elsewhere."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def shortage_note(voxels: int, available: int | None, noise_map: bool = False) -> str | None:
    """A warning, before a long run, where denoising ``voxels`` on the CPU (with ``noise_map``:
    ``--noise-map``) needs more memory than is ``available``; None where it fits or nothing is known.

    >>> shortage_note(512**3, available=2 * 10**9).split(":")[0]
    'this volume (134.2 million voxels) needs about 5.1 GB of memory to denoise on the CPU, and 2.0 GB are free'
    >>> shortage_note(512**3, available=5.5 * 10**9) is None, shortage_note(512**3, 5.5 * 10**9, noise_map=True)[:60]
    (True, 'this volume (134.2 million voxels) needs about 6.2 GB of mem')
    >>> shortage_note(512**3, available=None) is None
    True
    """
    need = BASE_BYTES + (BYTES_PER_VOXEL + (NOISE_MAP_BYTES_PER_VOXEL if noise_map else 0)) * voxels
    if available is None or need <= available:
        return None
    return (f"this volume ({voxels / 1e6:.1f} million voxels) needs about {need / 1e9:.1f} GB of memory to denoise on "
            f"the CPU, and {available / 1e9:.1f} GB are free: close other programs (or crop the volume) if it fails")
