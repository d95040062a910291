"""Real scanner noise, no simulation: do the methods bring a volume closer to its repeats?

    python benchmarks/real_noise.py [--out benchmarks/results/real_noise.md]

Three series that ship with nibabel (a dependency): ``example4d.nii.gz`` (2 volumes of a 2 x 2 x 2.2 mm
EPI), ``functional.nii`` (20 volumes, 4 x 4 x 8 mm, 3 slices) and ``phantom_EPI_asc_CLEAR_2_1.PAR``
(3 dynamics of a phantom EPI, 3.75 x 3.75 x 8 mm). Volume 0 is denoised and compared,
inside its head mask, with the other volumes (their mean where there are several): their noise is
independent of volume 0's, so a method that removes noise and keeps anatomy lowers the mean squared
difference, one that removes anatomy raises it. No clean truth is needed, but what the volumes
share beyond noise (motion, physiology, ghosts) stays in every figure. Methods: the raw volume 0, DIPY
``nlmeans(rician=True)`` with its own sigma estimate, ANTs ``denoise_image(noise_model="Rician")``,
MRIDenoise with the sigma estimated from volume 0 alone (what a 3-D file gets) and with the
series' sigma (what ``--volume 0`` on the 4-D file gets), each also with ``--thorough``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from quality import run_ants, run_dipy

from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.noise import estimate_sigma_in_series
from MRIDenoiseLib.pipeline import DenoisePipeline
from MRIDenoiseLib.training.real_noise import nibabel_series

SERIES = ("example4d.nii.gz", "functional.nii", "phantom_EPI_asc_CLEAR_2_1.PAR")


def load_series(name: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A nibabel test series as (t, z, y, x), and its voxel size (x, y, z) in mm."""
    data, spacing = nibabel_series(name)
    return np.ascontiguousarray(data.transpose(3, 2, 1, 0)), spacing


def compare(name: str, pipeline: DenoisePipeline) -> dict:
    series, spacing = load_series(name)
    first, others = series[0], series[1:].mean(axis=0)
    inside = head_mask(first)
    sigmas = estimate_sigma_in_series(series, 0)
    alone = pipeline.run(first, spacing, bias_correction=False)  # sigma estimated: sigmas.alone
    results = {
        "raw": first,
        "DIPY": run_dipy(first),
        "ANTs": run_ants(first, spacing),
        "MRIDenoise": alone.denoised,
        "MRIDenoise, series sigma": pipeline.run(first, spacing, bias_correction=False, sigma=sigmas.sigma).denoised,
        "--thorough": pipeline.run(first, spacing, bias_correction=False, thorough=True).denoised,
        "--thorough, series sigma": pipeline.run(first, spacing, bias_correction=False, sigma=sigmas.sigma,
                                                 thorough=True).denoised,
    }
    errors = {method: float(((result - others)[inside] ** 2).mean()) for method, result in results.items()}
    return {"series": name, "shape": list(first.shape), "volumes": len(series), "spacing": spacing,
            "sigma alone": sigmas.alone, "sigma series": sigmas.from_series, "errors": errors,
            "notes": [note.split(": ")[0] for note in alone.notes]}


def table(rows: list[dict]) -> str:
    methods = list(rows[0]["errors"])
    lines = ["| series | sigma: volume 0 / series | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for row in rows:
        raw = row["errors"]["raw"]
        cells = [f"{error:.1f} ({error / raw:.3f})" for error in row["errors"].values()]
        lines.append(f"| {row['series']} ({row['volumes']} volumes, {' x '.join(f'{s:g}' for s in row['spacing'])} mm) | "
                     f"{row['sigma alone']:.1f} / {row['sigma series']:.1f} | " + " | ".join(cells) + " |")
    notes = [f"- {row['series']}: " + ("; ".join(row["notes"]) or "none") for row in rows]
    return "\n".join([*lines, "", "What the command tells the user with volume 0 alone (each note's first clause):", "", *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the markdown table here as well")
    args = parser.parse_args()
    started = time.perf_counter()
    pipeline = DenoisePipeline()
    rows = [compare(name, pipeline) for name in SERIES]
    text = (table(rows) + "\n\nCells: mean squared difference of volume 0 (denoised or not) to the other volumes' mean "
            "inside volume 0's head mask, and in brackets its ratio to the raw volume's: below 1 the method helps.\n")
    print(text)
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
