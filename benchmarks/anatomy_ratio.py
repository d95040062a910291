"""Where the noise estimate's fourth-difference check acts: the Haar estimate over the fourth
difference's (``noise.ANATOMY_RATIO``: sigma may move from 1.2) on the benchmarks' inputs.

    python benchmarks/anatomy_ratio.py --data ../shared/data

The quality benchmark's inputs (its 48 noisy volumes, and the 16 further draws of each 1 mm and
6 mm lesion case), the slice-thickness sweep's 63, and the IXI T1 scans of ``../shared/data`` as
they are, with their own noise. Per group: how many, the largest ratio, and how many were lowered
or raised.
A few minutes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from quality import CASES, LESION_DRAWS, CaseMaker, case_noise, superior_axis
from slice_thickness import NOISE, acquisitions

from MRIDenoiseLib.benchmark_cases import CONTRASTS, remap_contrast, thick_slices
from MRIDenoiseLib.noise import add_rician_noise, estimate_noise


def quality_inputs(maker: CaseMaker):
    for case in CASES:
        clean, _, lesions, _ = maker.clean(case)
        for percent in case.noise:
            yield case_noise(clean, percent)
        for draw in range(LESION_DRAWS if lesions is not None else 0):  # as quality.lesion_draws draws them
            yield add_rician_noise(clean, 0.05 * float(clean.max()), np.random.default_rng(2000 + 10 * draw + 5))


def thickness_inputs(maker: CaseMaker):
    image, t1 = maker.scan("Colin27")
    spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
    for mm, axis in acquisitions(superior_axis(image)):
        for contrast in CONTRASTS:
            clean, _ = thick_slices(remap_contrast(t1, contrast, spacing), spacing, axis, mm)
            for percent in NOISE:
                yield case_noise(np.asarray(clean, dtype=np.float32), percent)


def ixi_scans(data: Path):
    for path in sorted((data / "train" / "ixi_t1_2mm").glob("*.nii*")):
        yield sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    maker = CaseMaker(args.data)
    print("| inputs | how many | largest Haar / fourth-difference ratio | sigma lowered | sigma raised |")
    print("|---|---|---|---|---|")
    for name, volumes in (("quality benchmark", quality_inputs(maker)), ("slice-thickness sweep", thickness_inputs(maker)),
                          ("IXI T1 scans as they are", ixi_scans(args.data))):
        estimates = [estimate_noise(volume) for volume in volumes]
        ratios = [e.haar_sigma / e.fourth_sigma for e in estimates if e.fourth_sigma]
        print(f"| {name} | {len(estimates)} | {max(ratios):.3f} | {sum(e.lowered for e in estimates)} | "
              f"{sum(e.raised for e in estimates)} |", flush=True)


if __name__ == "__main__":
    main()
