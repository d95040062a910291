"""Time the denoising pass on a GPU at 256³ and 512³, with peak GPU memory (issue: ≤ 0.3 s and ≤ 2 s).

    python benchmarks/gpu_speed.py ../shared/data/train/t1_1mm/colin27_ch2_1mm.nii.gz --runs 5

The scan is resampled to each cube size (a real brain, not random numbers, though the time does
not depend on content), Rician noise of 5% of its maximum is added, and each pass runs on it
as the pipeline runs it, host-to-device copy and copy back included: ``default``, the patch-means
pilot and the grouped Wiener step (``pipeline.pilot_step``, ``pipeline.wiener_step``);
``network``, ``denoise_volume`` (what --preserve-detail runs: scaling, sliding window, network),
once with the default window (the whole volume where the GPU has memory for it) and once with
256³ windows; with ``--thorough`` also ``thorough``, the pilot and the wider grouped step. The
median of ``--runs`` timed passes after one warm-up, and the peak of GPU memory allocated by
PyTorch, are printed as a table and written as JSON with ``--json``.
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
from MRIDenoiseLib.pipeline import DEFAULT_SEARCH, THOROUGH_SEARCH, pilot_step, wiener_step


def noisy_cube(scan: str, size: int, percent: float = 5.0) -> tuple[np.ndarray, float]:
    volume = np.asarray(nib.load(scan).dataobj, dtype=np.float32)
    cube = ndimage.zoom(volume, [size / n for n in volume.shape], order=1)
    sigma = percent / 100 * float(cube.max())
    return add_rician_noise(cube, sigma, np.random.default_rng(0)), sigma


class OutOfGpuMemory(RuntimeError):
    """Raised instead of the library's fallback to the CPU, which would time the wrong thing."""


def refuse_cpu_fallback(reason: str) -> None:
    raise OutOfGpuMemory(reason)


def denoise_pass(volume: np.ndarray, sigma: float, network, window: int | None, mode: str) -> np.ndarray:
    """One pass of ``mode`` (default, network or thorough) on the GPU, as the pipeline runs it."""
    cuda = torch.device("cuda")
    if mode == "network":
        return denoise_volume(volume, sigma, network, device=cuda, window=window, on_fallback=refuse_cpu_fallback)
    pilot = pilot_step(volume, sigma, (3, 3, 3), cuda, refuse_cpu_fallback)
    search = THOROUGH_SEARCH if mode == "thorough" else DEFAULT_SEARCH
    return wiener_step(volume, pilot, sigma, cuda, search, lambda fraction: None, refuse_cpu_fallback)


def time_pass(volume: np.ndarray, sigma: float, network, window: int | None, runs: int, mode: str) -> dict:
    def one_pass() -> float:
        torch.cuda.synchronize()
        started = time.perf_counter()
        denoise_pass(volume, sigma, network, window, mode)
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
    parser.add_argument("--thorough", action="store_true", help="also time --thorough's pass (the wider grouped step)")
    args = parser.parse_args()
    network = load_network(args.weights)
    rows = []
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'volume':>8} {'mode':>8} {'window':>6} {'median s':>9} {'min s':>7} {'max s':>7} {'peak GPU GB':>11}")
    passes = [("default", None), ("network", None), ("network", 256)] + ([("thorough", None)] if args.thorough else [])
    for size in (256, 512):
        volume, sigma = noisy_cube(args.scan, size)
        for mode, window in passes:
            if window is not None and size <= window:
                continue
            try:
                timing = time_pass(volume, sigma, network, window, args.runs, mode)
            except OutOfGpuMemory as error:
                print(f"{size:>7}³ {mode:>8} {window or 'auto':>6} out of GPU memory: {error}", flush=True)
                torch.cuda.empty_cache()
                continue
            row = {"size": size, "mode": mode, "window": window, **timing}
            rows.append(row)
            print(f"{size:>7}³ {mode:>8} {window or 'auto':>6} {row['median_s']:>9.3f} {row['min_s']:>7.3f} "
                  f"{row['max_s']:>7.3f} {row['peak_gpu_gb']:>11.2f}", flush=True)
    if args.json:
        with open(args.json, "w") as stream:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, stream, indent=1)


if __name__ == "__main__":
    main()
