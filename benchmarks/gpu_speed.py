"""Time the network pass on a GPU at 256³ and 512³, with peak GPU memory (issue: ≤ 0.3 s and ≤ 2 s).

    python benchmarks/gpu_speed.py ../shared/data/train/t1_1mm/colin27_ch2_1mm.nii.gz --runs 5

The scan is resampled to each cube size (a real brain, not random numbers, though the time does
not depend on content), Rician noise of 5% of its maximum is added, and ``denoise_volume`` runs
on it: host-to-device copy, scaling, sliding window, network, copy back; once with the default
window (the whole volume where the GPU has memory for it) and once with 256³ windows. The
median of ``--runs`` timed passes after one warm-up, and the peak of GPU memory allocated by
PyTorch, are printed as a table and written as JSON with ``--json``. ``--thorough`` adds rows
for the network pass followed by ``--thorough``'s Wiener step on the GPU (``pipeline.wiener_step``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from MRIDenoiseLib.inference import denoise_volume
from MRIDenoiseLib.model import DEFAULT_WEIGHTS, load_network
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.pipeline import wiener_step


def noisy_cube(scan: str, size: int, percent: float = 5.0) -> tuple[np.ndarray, float]:
    volume = np.asarray(nib.load(scan).dataobj, dtype=np.float32)
    cube = ndimage.zoom(volume, [size / n for n in volume.shape], order=1)
    sigma = percent / 100 * float(cube.max())
    return add_rician_noise(cube, sigma, np.random.default_rng(0)), sigma


class OutOfGpuMemory(RuntimeError):
    """Raised instead of the library's fallback to the CPU, which would time the wrong thing."""


def refuse_cpu_fallback(reason: str) -> None:
    raise OutOfGpuMemory(reason)


def denoise_pass(volume: np.ndarray, sigma: float, network, window: int | None, thorough: bool) -> np.ndarray:
    """The network pass on the GPU, and with ``thorough`` the Wiener step after it there, as the
    pipeline runs them."""
    denoised = denoise_volume(volume, sigma, network, device="cuda", window=window, on_fallback=refuse_cpu_fallback)
    if thorough:
        denoised = wiener_step(volume, denoised, sigma, torch.device("cuda"), lambda fraction: None, refuse_cpu_fallback)
    return denoised


def time_pass(volume: np.ndarray, sigma: float, network, window: int | None, runs: int, thorough: bool) -> dict:
    def one_pass() -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        denoise_pass(volume, sigma, network, window, thorough)
        torch.cuda.synchronize()
        return time.perf_counter() - started

    one_pass()
    torch.cuda.reset_peak_memory_stats()
    seconds = [one_pass() for _ in range(runs)]
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds),
            "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1024**3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--thorough", action="store_true", help="also time the network pass and the Wiener step")
    args = parser.parse_args()
    network = load_network(args.weights)
    rows = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'volume':>8} {'window':>6} {'thorough':>8} {'median s':>9} {'min s':>7} {'max s':>7} {'peak GPU GB':>11}")
    for size in (256, 512):
        volume, sigma = noisy_cube(args.scan, size)
        for window in (None, 256) if size > 256 else (None,):
            for thorough in (False, True) if args.thorough else (False,):
                try:
                    timing = time_pass(volume, sigma, network, window, args.runs, thorough)
                except OutOfGpuMemory as error:
                    print(f"{size:>7}³ {window or 'auto':>6} {thorough!s:>8} out of GPU memory: {error}", flush=True)
                    torch.cuda.empty_cache()
                    continue
                row = {"size": size, "window": window, "thorough": thorough, **timing}
                rows.append(row)
                print(f"{size:>7}³ {window or 'auto':>6} {thorough!s:>8} {row['median_s']:>9.3f} {row['min_s']:>7.3f} "
                      f"{row['max_s']:>7.3f} {row['peak_gpu_gb']:>11.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, stream, indent=1)


if __name__ == "__main__":
    main()
