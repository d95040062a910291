"""How much of a benchmark reference is its source scan's own noise, amplified by the contrast remap.

    python benchmarks/reference_noise.py --data ../shared/data

The T2- and PD-like cases of ``quality.py`` are piecewise-linear maps of a real T1 scan
(``MRIDenoiseLib.benchmark_cases.remap_contrast``). Between half the CSF level and the CSF level
the T2-like map is steep (0.15 to 1.0 of the peak over a small range of T1 intensity), so the T1
scan's own noise, small in T1, becomes texture in the "clean" reference, which every method is then
scored on keeping. For each held-out scan and contrast this prints how far the reference moves when
the source T1 gets one more draw of Gaussian noise at its own level (``estimate_sigma`` of the clean
scan): the RMS change inside the head as a % of the case's maximum, beside the benchmark's
noise levels (3, 5 and 9%). A reference whose own texture is as large as the test noise cannot
tell a denoiser that keeps it from one that removes it. Colin27 is also measured as the 2 mm
cases use it (remapped, then averaged over 2x2x2 blocks).

It also prints each clean T1's maximum over its 99.9th percentile (``intensity_scale``, what the
network's input is divided by): the benchmark's noise levels are % of the maximum, the training's
% of that robust maximum.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from quality import CONTRAST_NAMES, SCANS

from MRIDenoiseLib.benchmark_cases import CONTRASTS, block_average, remap_contrast
from MRIDenoiseLib.intensity import intensity_scale
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.noise import estimate_sigma

DRAWS = 3


def reference_change(t1: np.ndarray, contrast: str, spacing, sigma: float, seed: int, block: int = 1) -> float:
    """RMS change of the remapped reference (averaged over blocks of ``block**3`` voxels) inside its
    head mask, as a fraction of its maximum, when ``t1`` gets Gaussian noise of ``sigma`` once more."""
    reference, _ = block_average(remap_contrast(t1, contrast, spacing), spacing, block)
    noise = np.random.default_rng(seed).normal(0.0, sigma, t1.shape).astype(np.float32)
    redrawn, _ = block_average(remap_contrast(np.clip(t1 + noise, 0, None), contrast, spacing), spacing, block)
    mask = head_mask(reference)
    return float(np.sqrt(np.mean((redrawn[mask] - reference[mask]) ** 2)) / reference.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args()
    print("| scan | T1 max / its 99.9th percentile | own noise of the T1 (% of max) | contrast "
          "| reference change (% of max, median of 3) |")
    print("|---|---|---|---|---|")
    for name, block in [(name, 1) for name in SCANS] + [("Colin27", 2)]:
        image = sitk.ReadImage(str(Path(args.data) / SCANS[name]))
        t1 = sitk.GetArrayFromImage(image).astype(np.float32)
        spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
        sigma = estimate_sigma(t1)
        label = f"{name} (2x2x2 blocks)" if block > 1 else name
        spread = t1.max() / intensity_scale(t1)
        for contrast in CONTRASTS:
            change = np.median([reference_change(t1, contrast, spacing, sigma, seed, block) for seed in range(DRAWS)])
            print(f"| {label} | {spread:.2f} | {100 * sigma / t1.max():.2f} | {CONTRAST_NAMES[contrast]} | {100 * change:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
