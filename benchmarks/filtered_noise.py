"""Noise low-passed in k-space: what the Fermi, Hamming and Hann windows of scanners cost the estimate.

    python benchmarks/filtered_noise.py --data ../shared/data [--out X.md] [--no-peers]

Scanners often window k-space before the inverse Fourier transform (a Fermi filter against
ringing, a Hamming or Hann window for smoother images), which low-passes the noise between voxels
along the windowed axes. Here the real and imaginary Gaussian channels of the noise (5% of the
clean maximum, each voxel's sigma) are windowed in-plane (NumPy's axes 1 and 2): a Fermi, a
Hamming and a Hann window along each axis, and a Fermi window of the in-plane radius (as many
scanners' filters are; one at 0.4 cycles per voxel, one stronger at 0.3), then the magnitude is
taken (seeded). PSNR inside the head of the noisy input, DIPY and ANTs as
``benchmarks/quality.py`` runs them, MRIDenoise's default (no N4), the same with its noise taken
for white (the estimated sigma, the grouped step's white-noise gains: the default before it was
told the noise's correlation), and MRIDenoise given each voxel's true sigma (``--sigma``); with
the estimate's readings over that sigma (the Haar detail's, the fourth difference's, and the one
used: ``noise.estimate_noise``) and the lag-1 correlation it measured along the two windowed
axes against the window's own. About 25 minutes, most of it ANTs (``--no-peers``: a few).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from quality import Case, CaseMaker, run_ants, run_dipy

from MRIDenoiseLib.local_means import local_mean_kernel
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import psnr
from MRIDenoiseLib.noise import estimate_noise
from MRIDenoiseLib.pipeline import DEFAULT_SEARCH, DenoisePipeline, pilot_step, wiener_step

CASES = (Case("Colin27"), Case("Colin27", "T2"), Case("IXI080"))
PERCENT = 5


def fermi(cut_off: float, width: float):
    return lambda frequency: 1 / (1 + np.exp((np.abs(frequency) - cut_off) / width))


def separable(window):
    """A window of the two in-plane frequencies: ``window`` along each, multiplied."""
    return lambda first, second: window(first) * window(second)


def radial(window):
    """A window of the two in-plane frequencies: ``window`` of their radius (as scanners' Fermi filters)."""
    return lambda first, second: window(np.hypot(first, second))


# Of the in-plane frequencies in cycles per voxel (-0.5 to 0.5); each window is 1 at 0.
WINDOWS = {
    "Fermi (cut-off 0.4, width 0.02)": separable(fermi(0.4, 0.02)),
    "Hamming": separable(lambda frequency: 0.54 + 0.46 * np.cos(2 * np.pi * frequency)),
    "Hann": separable(lambda frequency: 0.5 + 0.5 * np.cos(2 * np.pi * frequency)),
    "Fermi, radial (cut-off 0.4, width 0.02)": radial(fermi(0.4, 0.02)),
    "Fermi, radial (cut-off 0.3, width 0.02)": radial(fermi(0.3, 0.02)),
}


def windowed_gaussian(shape, window, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise whose spectrum is ``window`` of the frequencies along NumPy's axes 1 and 2."""
    spectrum = np.fft.fftn(rng.normal(size=shape))
    spectrum *= window(np.fft.fftfreq(shape[1])[:, None], np.fft.fftfreq(shape[2])[None, :])
    noise = np.real(np.fft.ifftn(spectrum))
    return noise / noise.std()


def window_correlation(window, length: int = 512) -> float:
    """The lag-1 correlation of white noise windowed by ``window``, along the second in-plane axis."""
    frequency = np.fft.fftfreq(length)
    power = window(frequency[:, None], frequency[None, :]) ** 2
    return float(np.sum(power * np.cos(2 * np.pi * frequency[None, :])) / power.sum())


def taken_for_white(noisy: np.ndarray, sigma: float, spacing) -> np.ndarray:
    """The default's two stages (``DenoisePipeline._denoise_uniform``) with white-noise gains."""
    cpu = torch.device("cpu")
    pilot = pilot_step(noisy, sigma, local_mean_kernel(tuple(spacing)), cpu, print)
    return wiener_step(noisy, pilot, sigma, cpu, DEFAULT_SEARCH, lambda fraction: None, print)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="write the markdown table here as well")
    parser.add_argument("--no-peers", action="store_true", help="leave DIPY and ANTs out")
    args = parser.parse_args()
    maker, pipeline = CaseMaker(args.data), DenoisePipeline()
    lines = ["| case | window | sigma read / true: Haar, fourth difference, used | lag-1 correlation measured along "
             "J, I / the window's | noisy | DIPY nlmeans | ANTs DenoiseImage | MRIDenoise | MRIDenoise, noise taken for "
             "white | MRIDenoise, true sigma | lost to the estimate (dB) | MRIDenoise vs best other (dB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in CASES:
        clean, spacing, _, _ = maker.clean(case)
        mask, xyz, sigma = head_mask(clean), tuple(reversed(spacing)), PERCENT / 100 * float(clean.max())
        for seed, (name, window) in enumerate(WINDOWS.items()):
            rng = np.random.default_rng(seed)
            real, imaginary = (sigma * windowed_gaussian(clean.shape, window, rng) for _ in range(2))
            noisy = np.hypot(clean + real, imaginary).astype(np.float32)
            estimate = estimate_noise(noisy)
            default = psnr(clean, pipeline.run(noisy, xyz, bias_correction=False).denoised, mask)
            white = psnr(clean, taken_for_white(noisy, estimate.sigma, spacing), mask)
            given = psnr(clean, pipeline.run(noisy, xyz, bias_correction=False, sigma=sigma).denoised, mask)
            readings = ", ".join("-" if value is None else f"{value / sigma:.2f}"
                                 for value in (estimate.finest, estimate.fourth_sigma, estimate.sigma))
            if estimate.zero_filled:
                measured = "taken as zero-filled along " + ", ".join("KJI"[axis] for axis in estimate.zero_filled)
            else:
                measured = ("not measured" if estimate.correlation is None else
                            ", ".join(f"{value:.2f}" for value in estimate.correlation[1:, 1]))
            others = [psnr(clean, noisy, mask)]
            if not args.no_peers:
                others += [psnr(clean, run_dipy(noisy), mask), psnr(clean, run_ants(noisy, xyz), mask)]
            peers = " | ".join(f"{value:.2f}" for value in others[1:]) if len(others) > 1 else "— | —"
            lines.append(f"| {case.name} | {name} | {readings} | {measured} / {window_correlation(window):.2f} | "
                         f"{others[0]:.2f} | {peers} | {default:.2f} | {white:.2f} | {given:.2f} | "
                         f"{given - default:+.2f} | {default - max(others):+.2f} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + (f"\n\nNoise {PERCENT}% of the clean maximum (each voxel's sigma), windowed along the "
                               "in-plane axes. PSNR (dB) inside the head.")
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
