"""Coarse voxels at low noise: where the automatic sigma runs high, and what that costs.

    python benchmarks/coarse_low_noise.py --data ../shared/data [--out X.md] [--json X.json]

The noise estimate reads sigma from the tissue's finest detail (``noise.estimate_noise``). The
coarser the voxels and the lower the noise, the more of that detail is anatomy. Here Colin27
(T1 and its T2- and PD-like remaps) is averaged to 2 x 2 x 2, 2 x 2 x 4 and 4 x 4 x 8 mm (the
last along superior-inferior), then Rician noise of 0.5, 1 and 2% of the clean maximum is added
(seeded); PSNR and SSIM inside the head against the clean averaged scan of the noisy input, DIPY
and ANTs as ``benchmarks/quality.py`` runs them, MRIDenoise's default (no N4), and MRIDenoise
given the true sigma (``--sigma``). 27 cases, a few minutes.
"""

from __future__ import annotations

import numpy as np
from quality import Colin27Sweep, run_ants, run_dipy, superior_axis

from MRIDenoiseLib.benchmark_cases import CONTRASTS, remap_contrast, thick_slices
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import psnr, ssim
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.pipeline import DenoisePipeline

NOISE = (0.5, 1.0, 2.0)
# (mm along superior-inferior, mm along the two other axes)
VOXELS = ((2, 2), (4, 2), (8, 4))
METHODS = ("noisy", "DIPY", "ANTs", "MRIDenoise", "MRIDenoise, true sigma")


def coarse(t1: np.ndarray, spacing, superior: int, across_mm: int, in_plane_mm: int):
    """``t1`` averaged to ``across_mm`` along ``superior`` and ``in_plane_mm`` along the others."""
    for axis in range(3):
        t1, spacing = thick_slices(t1, spacing, axis, across_mm if axis == superior else in_plane_mm)
    return np.asarray(t1, dtype=np.float32), spacing


def run_case(pipeline: DenoisePipeline, clean: np.ndarray, spacing, percent: float, seed: int) -> dict:
    mask, xyz = head_mask(clean), tuple(reversed(spacing))
    sigma = percent / 100 * float(clean.max())
    noisy = add_rician_noise(clean, sigma, np.random.default_rng(seed))
    estimated = pipeline.run(noisy, xyz, bias_correction=False)
    given = pipeline.run(noisy, xyz, bias_correction=False, sigma=sigma).denoised
    results = dict(zip(METHODS, (noisy, run_dipy(noisy), run_ants(noisy, xyz), estimated.denoised, given)))
    row = {method: {"psnr": psnr(clean, volume, mask), "ssim": ssim(clean, volume, mask)}
           for method, volume in results.items()}
    row["sigma / true"] = estimated.sigma / sigma
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| voxels (mm) | contrast | noise | sigma / true | " + " | ".join(METHODS)
             + " | MRIDenoise vs noisy (dB) | with the true sigma (dB) |", "|---|---|---|---|" + "---|" * (len(METHODS) + 2)]
    for row in rows:
        cells = " | ".join(f"{row[method]['psnr']:.2f} / {row[method]['ssim']:.3f}" for method in METHODS)
        noisy = row["noisy"]["psnr"]
        lines.append(f"| {row['voxels']} | {row['contrast']} | {row['noise']:g}% | {row['sigma / true']:.2f} | {cells} | "
                     f"{row['MRIDenoise']['psnr'] - noisy:+.2f} | {row['MRIDenoise, true sigma']['psnr'] - noisy:+.2f} |")
    worse = [f"{row['voxels']} mm {row['contrast']} {row['noise']:g}%" for row in rows
             if row["MRIDenoise"]["psnr"] < row["noisy"]["psnr"]]
    peers = [row[m]["psnr"] < row["noisy"]["psnr"] for row in rows for m in ("DIPY", "ANTs")]
    lines.append(f"\nMRIDenoise's default below the noisy input in {len(worse)} of {len(rows)} cases "
                 f"({', '.join(worse) or 'none'}); with the true sigma in "
                 f"{sum(row['MRIDenoise, true sigma']['psnr'] < row['noisy']['psnr'] for row in rows)}. DIPY and ANTs "
                 f"below it in {sum(peers)} of {len(peers)} runs. Cells: PSNR (dB) / SSIM inside the head.")
    return "\n".join(lines)


def main() -> None:
    sweep = Colin27Sweep.from_command_line(__doc__.splitlines()[0])
    rows = []
    for across, in_plane in VOXELS:
        for contrast in CONTRASTS:
            clean, coarse_spacing = coarse(remap_contrast(sweep.t1, contrast, sweep.spacing), sweep.spacing,
                                           superior_axis(sweep.image), across, in_plane)
            for seed, percent in enumerate(NOISE):
                row = {"voxels": f"{in_plane} x {in_plane} x {across}", "contrast": contrast, "noise": percent,
                       **run_case(sweep.pipeline, clean, coarse_spacing, percent, seed)}
                rows.append(row)
                print(f"{row['voxels']} {contrast} {percent:g}%: sigma/true {row['sigma / true']:.2f} "
                      + " ".join(f"{m} {row[m]['psnr']:.2f}" for m in METHODS), flush=True)
    sweep.write(markdown(rows), rows)


if __name__ == "__main__":
    main()
