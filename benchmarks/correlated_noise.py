"""Noise correlated between neighbouring voxels, as a scanner's zero-filled interpolation makes it:
a known limit of the noise estimate.

    python benchmarks/correlated_noise.py --data ../shared/data

Many scanners reconstruct on a finer grid than they sample (2x in-plane "zero-filled
interpolation"): the noise is then low-passed, and neighbouring voxels' noise correlates. Here
each channel of the Rician noise is white noise whose k-space is cut to its central half along the
two in-plane axes (the last two NumPy axes), then scaled back to the same sigma per voxel (one
seeded draw per case). PSNR inside the clean case's head mask (peak = the clean maximum) of the
noisy input, DIPY and ANTs as ``benchmarks/quality.py`` runs them, MRIDenoise with its own sigma
estimate, and MRIDenoise given the true sigma (``--sigma``); with the noise's lag-1 correlation
along the last axis and the estimate over the true sigma.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from quality import Case, CaseMaker, run_ants, run_dipy

from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import psnr
from MRIDenoiseLib.noise import estimate_sigma
from MRIDenoiseLib.pipeline import DenoisePipeline

CASES = [(Case("IXI080"), 5), (Case("IXI130"), 9), (Case("Colin27", "T2", block=2), 5)]


def zero_filled_noise(shape, rng: np.random.Generator, axes=(1, 2)) -> np.ndarray:
    """White noise with its k-space cut to the central half along ``axes``, scaled to unit variance."""
    spectrum = np.fft.fftn(rng.normal(size=shape))
    for axis in axes:
        n = shape[axis]
        kept = np.zeros(n, bool)
        kept[: n // 4] = kept[-(n // 4):] = True
        spectrum *= kept.reshape([-1 if index == axis else 1 for index in range(len(shape))])
    noise = np.real(np.fft.ifftn(spectrum))
    return noise / noise.std()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    maker, pipeline = CaseMaker(args.data), DenoisePipeline()
    print("| case | noise | lag-1 correlation | estimate / true sigma | noisy | DIPY nlmeans | ANTs DenoiseImage "
          "| MRIDenoise | MRIDenoise, true sigma |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case, percent in CASES:
        clean, spacing, _, _ = maker.clean(case)
        mask, xyz = head_mask(clean), tuple(reversed(spacing))
        sigma, rng = percent / 100 * float(clean.max()), np.random.default_rng(5)
        real, imaginary = zero_filled_noise(clean.shape, rng), zero_filled_noise(clean.shape, rng)
        lag = np.corrcoef(real[..., 1:].ravel(), real[..., :-1].ravel())[0, 1]
        noisy = np.hypot(clean + sigma * real, sigma * imaginary).astype(np.float32)
        results = (noisy, run_dipy(noisy), run_ants(noisy, xyz), pipeline.run(noisy, xyz, bias_correction=False).denoised,
                   pipeline.run(noisy, xyz, bias_correction=False, sigma=sigma).denoised)
        print(f"| {case.name} | {percent}% | {lag:.2f} | {estimate_sigma(noisy) / sigma:.2f} | "
              + " | ".join(f"{psnr(clean, volume, mask):.2f}" for volume in results) + " |", flush=True)


if __name__ == "__main__":
    main()
