"""Noise correlated between neighbouring voxels, as a scanner's zero-filled interpolation makes it.

    python benchmarks/correlated_noise.py --data ../shared/data [--no-peers]

Many scanners reconstruct on a finer grid than they sample (2x in-plane "zero-filled
interpolation"): the noise is then low-passed, and neighbouring voxels' noise correlates. Four
kinds of case, made from the quality benchmark's held-out scans (``quality.CaseMaker``), one
seeded draw each, all but the third zero-filled along the last two NumPy axes:

- scanner: the scan sampled at half the in-plane resolution and reconstructed 2x, anatomy and
  noise both cut to the inner half of k-space (``benchmark_cases.zero_filled_scan``); scored
  against the clean scan so cut;
- noise only: the anatomy at full resolution, each channel of the Rician noise cut so (the
  first version of this benchmark; no scanner makes it, and the cut is harder to see under the
  anatomy); scored against the clean scan;
- scanner, through-plane: as the scanner kind, but zero-filled along superior-inferior alone
  (slice interpolation of an axial acquisition, as GE's ZIP2 makes it);
- scanner, windowed: as the scanner kind, the k-space it sampled also filtered (a Hamming window
  along each in-plane axis, or a Fermi window of the in-plane radius at 0.9 of the band's edge,
  width 0.04), as scanners filter before they zero-fill; scored against the clean scan so cut
  and filtered.

PSNR inside the clean case's head mask (peak = the reference's maximum) of the noisy input, DIPY
and ANTs as ``benchmarks/quality.py`` runs them, MRIDenoise (its own sigma estimate, which looks
for the cut: ``zero_filling``, and where it finds one denoises each grid the scan was sampled on
apart, then the whole image with their result as the pilot and gains that know the noise's
spectrum), and MRIDenoise given the true sigma (``--sigma``); with the noise's lag-1 correlation
along the last axis that was cut (in bright tissue), the step in the power spectrum at half Nyquist
beyond the slope beside it on each axis that was cut, the axes the estimate took as zero-filled, and the
estimate over the true sigma: as the finest (Haar) detail of the grid it ran on reads it (the
first sampled grid where zero-filled, else the image; ``noise.NoiseEstimate.finest``), and as
used (after the check that raises it where that grid's noise is low-passed).

Then how the step is spread where there is no cut (the threshold, ``zero_filling.MIN_STEP``, must
stay above all of these): the quality benchmark's 48 noisy inputs, the raw training scans,
nibabel's three real series, and partial Fourier 6/8 acquisitions zero-filled on one side
(``benchmark_cases.partial_fourier_scan``; taken for zero-filled interpolation, they lost up to
3.7 dB in a first version of the detector), and scans zero-filled by 1.25x and 1.5x, which are
read as low-passed noise, not as 2x; and where there is one, the scanner kind at 1 to 15% noise
(it must stay above the threshold), and the windowed kind, whose smooth window leaves a smaller
step (at high noise it falls below it).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from quality import CASES, Case, CaseMaker, case_noise, run_ants, run_dipy, superior_axis
from real_noise import SERIES, load_series

from MRIDenoiseLib.benchmark_cases import cut_k_space, hamming_window, partial_fourier_scan, radial_fermi_window, zero_filled_scan
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import psnr
from MRIDenoiseLib.noise import estimate_noise
from MRIDenoiseLib.pipeline import DenoisePipeline
from MRIDenoiseLib.zero_filling import MIN_SEGMENTS, MIN_STEP, SEGMENT, half_nyquist_steps

IN_PLANE = (1, 2)
CASES_SCANNER = [(Case("IXI080"), 5), (Case("IXI130"), 9), (Case("IXI080", "T2"), 5),
                 (Case("Colin27", "T1", block=2), 3), (Case("Colin27", "T2", block=2), 5),
                 (Case("Colin27", "PD", block=2), 9)]
CASES_NOISE_ONLY = [(Case("IXI080"), 5), (Case("IXI130"), 9), (Case("Colin27", "T2", block=2), 5)]
# Zero-filled through-plane (slice interpolation, GE's ZIP2): along superior-inferior only.
CASES_THROUGH_PLANE = [(Case("IXI080"), 5), (Case("Colin27", "T2", block=2), 5), (Case("Colin27", "PD", block=2), 9)]


WINDOWS = {"Hamming": hamming_window, "radial Fermi": radial_fermi_window}
CASES_WINDOWED = [(Case("IXI080"), 5, "Hamming"), (Case("IXI080"), 5, "radial Fermi"),
                  (Case("Colin27", "T2", block=2), 5, "Hamming"), (Case("Colin27", "T1", block=2), 3, "radial Fermi")]


def steps(volume: np.ndarray, axes=(0, 1, 2)) -> list[float]:
    return [step for axis, step in half_nyquist_steps(volume).items() if axis in axes]


def lag_correlation(noise: np.ndarray, where: np.ndarray, axis: int = 2) -> float:
    """Correlation of neighbours along ``axis``, over pairs both in ``where`` (bright tissue,
    where the magnitude's noise is close to the real channel's)."""
    noise, where = np.moveaxis(noise, axis, -1), np.moveaxis(where, axis, -1)
    both = where[..., 1:] & where[..., :-1]
    return float(np.corrcoef(noise[..., 1:][both], noise[..., :-1][both])[0, 1])


def zero_filled_noise(shape, rng: np.random.Generator) -> np.ndarray:
    """White noise with its k-space cut to the central half in-plane, scaled to unit variance."""
    noise = cut_k_space(rng.normal(size=shape), IN_PLANE).real
    return noise / noise.std()


def noise_only_case(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    real, imaginary = zero_filled_noise(clean.shape, rng), zero_filled_noise(clean.shape, rng)
    return clean, np.hypot(clean + sigma * real, sigma * imaginary).astype(np.float32)


def compare(maker: CaseMaker, pipeline: DenoisePipeline, peers: bool) -> None:
    print("| kind | case | noise | lag-1 correlation (last cut axis) | step at half Nyquist (cut axes) | axes found | "
          "estimate / true "
          "sigma: finest detail, used | noisy | DIPY nlmeans | ANTs DenoiseImage | MRIDenoise | MRIDenoise, true sigma |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, cases in (("scanner", CASES_SCANNER), ("noise only", CASES_NOISE_ONLY),
                        ("scanner, through-plane", CASES_THROUGH_PLANE), ("scanner, windowed", CASES_WINDOWED)):
        for case, percent, *named in cases:
            clean, spacing, _, _ = maker.clean(case)
            mask, xyz = head_mask(clean), tuple(reversed(spacing))
            sigma, rng = percent / 100 * float(clean.max()), np.random.default_rng(5)
            cut = (superior_axis(maker.scan(case.scan)[0]),) if kind == "scanner, through-plane" else IN_PLANE
            window = named[0] if named else None  # the windowed kind's
            make = ((lambda c, s, r: zero_filled_scan(c, s, r, cut, WINDOWS.get(window))) if kind.startswith("scanner")
                    else noise_only_case)
            reference, noisy = make(clean, sigma, rng)
            lag = lag_correlation(noisy - reference, reference > 0.5 * reference.max(), cut[-1])
            ours = pipeline.run(noisy, xyz, bias_correction=False)
            results = [noisy, run_dipy(noisy) if peers else None, run_ants(noisy, xyz) if peers else None, ours.denoised,
                       pipeline.run(noisy, xyz, bias_correction=False, sigma=sigma).denoised]
            found = ", ".join("KJI"[axis] for axis in ours.zero_filled) or "none"
            print(f"| {kind} | {case.name}{', ' + window if window else ''} | {percent}% | {lag:.2f} | "
                  + " / ".join(f"{step:.2f}" for step in steps(noisy, cut)) + f" | {found} | "
                  f"{estimate_noise(noisy).finest / sigma:.2f}, {ours.sigma / sigma:.2f} | "
                  + " | ".join("—" if volume is None else f"{psnr(reference, volume, mask):.2f}" for volume in results)
                  + " |", flush=True)


def spread(maker: CaseMaker, data: Path) -> None:
    print("\n| images | how many | largest step at half Nyquist (any axis) | where |")
    print("|---|---|---|---|")
    white = [(max(steps(case_noise(maker.clean(case)[0], percent))), f"{case.name} {percent}%")
             for case in CASES for percent in case.noise]
    print(f"| quality benchmark, white Rician noise | {len(white)} | {max(white)[0]:.2f} | {max(white)[1]} |")
    raw = []
    for path in sorted((data / "train").glob("*/*.nii*")):
        scan = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        raw.append((max(steps(scan)), path.name))
    print(f"| raw training scans | {len(raw)} | {max(raw)[0]:.2f} | {max(raw)[1]} |")
    for name in SERIES:
        volume = load_series(name)[0][0].astype(np.float32)
        found = steps(volume)
        print(f"| nibabel {name}, volume 0 | 1 | {max(found):.2f} | |" if found else
              f"| nibabel {name}, volume 0 | 1 | — | {' x '.join(map(str, volume.shape))} voxels: no axis with "
              f"{MIN_SEGMENTS} segments of {SEGMENT} in the tissue |")
    cut, partial, other_factors, windowed = [], [], [], []
    for case in (Case("Colin27"), Case("Colin27", "T2"), Case("Colin27", "PD"), Case("IXI080"), Case("IXI130"),
                 Case("IXI080", "T2")):
        clean = maker.clean(case)[0]
        for percent in (1, 2, 3, 5, 9, 15):
            sigma, name = percent / 100 * float(clean.max()), f"{case.name} {percent}%"
            partial.append((max(steps(partial_fourier_scan(clean, sigma, np.random.default_rng(7))[1])), name))
            _, noisy = zero_filled_scan(clean, sigma, np.random.default_rng(7), IN_PLANE)
            cut.append((min(steps(noisy, IN_PLANE)), name))
            for factor in (1.25, 1.5):
                _, noisy = zero_filled_scan(clean, sigma, np.random.default_rng(7), IN_PLANE, factor=factor)
                other_factors.append((max(steps(noisy)), f"{name}, {factor}x"))
            for window, weights in WINDOWS.items():
                _, noisy = zero_filled_scan(clean, sigma, np.random.default_rng(7), IN_PLANE, weights)
                windowed.append((min(steps(noisy, IN_PLANE)), f"{name}, {window}"))
    print(f"| partial Fourier 6/8 along I, one side zero-filled, 1-15% noise | {len(partial)} | {max(partial)[0]:.2f} "
          f"| {max(partial)[1]} |")
    print(f"| zero-filled 1.25x and 1.5x in-plane (not 2x), 1-15% noise | {len(other_factors)} | "
          f"{max(other_factors)[0]:.2f} | {max(other_factors)[1]} |")
    print(f"| scanner kind, zero-filled in-plane, 1-15% noise (the smaller of J and I) | {len(cut)} | smallest "
          f"{min(cut)[0]:.2f} | {min(cut)[1]} |")
    print(f"| windowed kind (Hamming or radial Fermi), zero-filled in-plane, 1-15% noise (the smaller of J and I) | "
          f"{len(windowed)} | smallest {min(windowed)[0]:.2f} | {min(windowed)[1]} |")
    print(f"\nThreshold (`zero_filling.MIN_STEP`): {MIN_STEP}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--no-peers", action="store_true", help="leave DIPY and ANTs out")
    args = parser.parse_args()
    maker = CaseMaker(args.data)
    compare(maker, DenoisePipeline(), not args.no_peers)
    spread(maker, args.data)


if __name__ == "__main__":
    main()
