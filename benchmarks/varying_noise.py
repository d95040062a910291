"""Noise that varies across the image: one sigma against ``--noise-map``, and how often the noise
looks as if it varied where it does not.

    python benchmarks/varying_noise.py --data ../shared/data

Part 1, varying noise: the quality benchmark's held-out cases (``quality.CaseMaker``), Rician
noise whose sigma is a fixed multiple of the clean maximum times a g-factor-like field (highest
in the middle of the volume, as parallel imaging makes it: 1.5 there, 0.6 at the edges), one
seeded draw per case. PSNR inside the clean case's head mask (peak = the clean maximum) of the
noisy input, DIPY ``nlmeans(rician=True)`` (one sigma from its ``estimate_sigma``) and ANTs
``denoise_image(noise_model="Rician")`` (which estimates the noise locally) as
``benchmarks/quality.py`` runs them, the default (one sigma estimated), ``--noise-map``, and the
oracle: the default run on the volume divided by the true field with the true sigma, multiplied
back. ``--no-peers`` leaves DIPY and ANTs out (ANTs takes minutes on a 1 mm brain here). With
the field as found: its spread (95th over 5th percentile in the tissue) and its residual excess
(``noise_field``: 1 for blocks of pure noise, more where their detail is anatomy); the map is
used where the spread is above ``VARYING_SPREAD`` and the excess at most ``MAX_RESIDUAL_EXCESS``.

Part 2, uniform noise: the same on every case of the quality benchmark with its own noise draws
(3, 5 and 9%, uniform; the lesion and bias cases at 5%): where the map would be used, the
command would note that the noise seems to vary; with what ``--noise-map`` then gives.

Part 3: the same on training scans as they are (real scans with their own noise only): where
the noise is low against the anatomy, the fit follows the anatomy, and the excess says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from quality import CASES, Case, CaseMaker, case_noise, run_ants, run_dipy

from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import psnr
from MRIDenoiseLib.noise import add_rician_noise, estimate_noise
from MRIDenoiseLib.noise_field import MAX_RESIDUAL_EXCESS, VARYING_SPREAD, estimate_noise_field
from MRIDenoiseLib.pipeline import DenoisePipeline

VARYING_CASES = [
    (Case("Colin27", "T1"), 5), (Case("Colin27", "T2"), 5), (Case("IXI080", "T1"), 3), (Case("IXI080", "T1"), 5),
    (Case("IXI130", "T1"), 9), (Case("IXI080", "T2"), 5), (Case("Colin27", "T2", block=2), 5),
    (Case("Colin27", "PD", thick=True), 5), (Case("Colin27", "T1", thick=True), 9),
]

RAW_IXI = 12  # of the IXI training scans, the first in name order


def g_factor(shape, low: float = 0.6, high: float = 1.5) -> np.ndarray:
    """A smooth bump, ``high`` in the middle of the volume, falling to about ``low`` at its faces."""
    axes = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij", sparse=True)
    squared = 0.3 * axes[0] ** 2 + axes[1] ** 2 + axes[2] ** 2
    return (low + (high - low) * np.exp(-squared / (2 * 0.35**2))).astype(np.float32)


def field_of(volume: np.ndarray):
    estimate = estimate_noise(volume)
    return estimate_noise_field(estimate.blocks, estimate.finest) if estimate.blocks is not None else None


def spread_of(volume: np.ndarray) -> str:
    """The field's spread and its residual excess (``noise_field``), as a table cell."""
    field = field_of(volume)
    return "no field" if field is None else describe(field)


def describe(field) -> str:
    return f"{field.spread:.2f} / {field.residual_excess:.1f}" + (" (anatomy)" if field.follows_anatomy else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--uniform-only", action="store_true", help="part 2 alone")
    parser.add_argument("--no-peers", action="store_true", help="leave DIPY and ANTs out of part 1")
    args = parser.parse_args()
    maker, pipeline = CaseMaker(args.data), DenoisePipeline()
    if not args.uniform_only:
        varying(maker, pipeline, peers=not args.no_peers)
    uniform(maker, pipeline)
    raw_scans(args.data)


def raw_scans(data: Path) -> None:
    print("\nThe training scans as they are (their own noise, no noise added): spread / excess found\n")
    print("| scan | spread / excess |")
    print("|---|---|")
    one_mm, ixi = (sorted((data / "train" / folder).glob("*.nii*")) for folder in ("t1_1mm", "ixi_t1_2mm"))
    scans = [*one_mm, *ixi[:RAW_IXI]]
    for path in scans:
        volume = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        print(f"| {path.name} | {spread_of(volume)} |", flush=True)


def varying(maker: CaseMaker, pipeline: DenoisePipeline, peers: bool) -> None:
    print("| case | noise (% of max, times the field) | spread / excess found | noisy | DIPY nlmeans | ANTs DenoiseImage "
          "| MRIDenoise, one sigma | --noise-map | oracle |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, percent in VARYING_CASES:
        clean, spacing, _, _ = maker.clean(case)
        mask, xyz = head_mask(clean), tuple(reversed(spacing))
        field, sigma = g_factor(clean.shape), percent / 100 * float(clean.max())
        noisy = add_rician_noise(clean, sigma * field, np.random.default_rng(2000 + percent))
        one = pipeline.run(noisy, xyz, bias_correction=False).denoised
        mapped = pipeline.run(noisy, xyz, bias_correction=False, noise_map=True).denoised
        oracle = pipeline.run(noisy / field, xyz, bias_correction=False, sigma=sigma).denoised * field
        others = (run_dipy(noisy), run_ants(noisy, xyz)) if peers else ()
        cells = [f"{psnr(clean, volume, mask):.2f}" for volume in (noisy, *others, one, mapped, oracle)]
        if not peers:
            cells[1:1] = ["-", "-"]
        print(f"| {case.name} | {percent}% | {spread_of(noisy)} | " + " | ".join(cells) + " |", flush=True)



def uniform(maker: CaseMaker, pipeline: DenoisePipeline) -> None:
    print(f"\nUniform noise: the spread / excess found (a map is used above a spread of {VARYING_SPREAD} where the "
          f"excess is at most {MAX_RESIDUAL_EXCESS}), at 3 / 5 / 9%\n")
    print("| case | 3% | 5% | 9% |")
    print("|---|---|---|---|")
    mapped = []
    for case in CASES:
        clean, spacing, _, _ = maker.clean(case)
        spreads = {}
        for percent in case.noise:
            noisy = case_noise(clean, percent)
            field = field_of(noisy)
            spreads[percent] = "no field" if field is None else describe(field)
            if field is not None and field.varies:
                mapped.append((case, percent, clean, spacing, noisy))
        print(f"| {case.name} | " + " | ".join(spreads.get(p, "-") for p in (3, 5, 9)) + " |", flush=True)
    print("\nWhere a map is used on uniform noise: PSNR of one sigma and of --noise-map\n")
    print("| case | noise | one sigma | --noise-map |")
    print("|---|---|---|---|")
    for case, percent, clean, spacing, noisy in mapped:
        mask, xyz = head_mask(clean), tuple(reversed(spacing))
        cells = [psnr(clean, pipeline.run(noisy, xyz, bias_correction=False, noise_map=on).denoised, mask)
                 for on in (False, True)]
        print(f"| {case.name} | {percent}% | {cells[0]:.2f} | {cells[1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
