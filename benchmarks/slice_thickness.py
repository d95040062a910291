"""Slice thicknesses and orientations the quality benchmark does not use: slabs of 3 to 8 mm.

    python benchmarks/slice_thickness.py --data ../shared/data [--out X.md] [--json X.json]

The quality benchmark has one thick-slice acquisition, 6 mm slabs along superior-inferior. Here
Colin27 (1 mm, T1 and its T2- and PD-like remaps, ``benchmark_cases.remap_contrast``) is
averaged over slabs of 3, 4, 5, 7 and 8 mm along superior-inferior, and of 5 mm along each of the
two other axes (coronal and sagittal slices), then Rician noise of 3, 5 and 9% of the clean
maximum is added (``quality.case_noise``'s seeded draws); PSNR and SSIM inside the head against
the clean slab-averaged scan, of the noisy input, DIPY and ANTs as ``benchmarks/quality.py`` runs
them, and MRIDenoise's default (no N4). 63 cases; ANTs takes most of the half hour.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from quality import Colin27Sweep, case_noise, run_ants, run_dipy, superior_axis

from MRIDenoiseLib.benchmark_cases import CONTRASTS, remap_contrast, thick_slices
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import psnr, ssim
from MRIDenoiseLib.pipeline import DenoisePipeline

NOISE = (3, 5, 9)
PLANES = ("sagittal", "coronal", "axial")  # slices across physical x (left-right), y, z
METHODS = ("noisy", "DIPY", "ANTs", "MRIDenoise")


def acquisitions(superior: int) -> list[tuple[int, int]]:
    """(slab thickness in mm, NumPy axis across the slabs)."""
    return [(mm, superior) for mm in (3, 4, 5, 7, 8)] + [(5, axis) for axis in range(3) if axis != superior]


def orientation(image: sitk.Image, axis: int) -> str:
    """The plane of slices stacked along NumPy ``axis`` of ``image``'s array."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return PLANES[int(np.argmax(np.abs(direction[:, 2 - axis])))]


def run_case(pipeline: DenoisePipeline, clean: np.ndarray, spacing, percent: int) -> dict:
    mask, xyz = head_mask(clean), tuple(reversed(spacing))
    noisy = case_noise(clean, percent)
    ours = pipeline.run(noisy, xyz, bias_correction=False)
    results = dict(zip(METHODS, (noisy, run_dipy(noisy), run_ants(noisy, xyz), ours.denoised)))
    row = {method: {"psnr": psnr(clean, volume, mask), "ssim": ssim(clean, volume, mask)}
           for method, volume in results.items()}
    row["sigma / true"] = ours.sigma / (percent / 100 * float(clean.max()))
    row["notes"] = ours.notes
    return row


def markdown(rows: list[dict]) -> str:
    lines = ["| slices | contrast | noise | noisy | DIPY nlmeans | ANTs DenoiseImage | MRIDenoise | "
             "MRIDenoise vs best other (dB) | SSIM vs best other |", "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        others = [row[method] for method in METHODS[:-1]]
        ours = row["MRIDenoise"]
        cells = " | ".join(f"{row[method]['psnr']:.2f} / {row[method]['ssim']:.3f}" for method in METHODS)
        lines.append(f"| {row['mm']} mm {row['orientation']} | {row['contrast']} | {row['noise']}% | {cells} | "
                     f"{ours['psnr'] - max(o['psnr'] for o in others):+.2f} | "
                     f"{ours['ssim'] - max(o['ssim'] for o in others):+.3f} |")
    margins = [row["MRIDenoise"]["psnr"] - max(row[m]["psnr"] for m in METHODS[:-1]) for row in rows]
    short = [f"{row['mm']} mm {row['orientation']} {row['contrast']} {row['noise']}%"
             for row, margin in zip(rows, margins) if margin < 2]
    lines.append(f"\nAhead of the best of the noisy input, DIPY and ANTs in {sum(m > 0 for m in margins)} of {len(rows)} "
                 f"cases (least {min(margins):+.2f} dB, median {np.median(margins):+.2f} dB); +2 dB or more in "
                 f"{len(rows) - len(short)}; short of it: {', '.join(short) or 'none'}. Cells: PSNR (dB) / SSIM inside "
                 "the head. Notes MRIDenoise gave: "
                 + (", ".join(sorted({note for row in rows for note in row["notes"]})) or "none") + ".")
    return "\n".join(lines)


def main() -> None:
    sweep = Colin27Sweep.from_command_line(__doc__.splitlines()[0])
    rows = []
    for mm, axis in acquisitions(superior_axis(sweep.image)):
        for contrast in CONTRASTS:
            clean, thick_spacing = thick_slices(remap_contrast(sweep.t1, contrast, sweep.spacing), sweep.spacing, axis, mm)
            clean = clean.astype(np.float32)
            for percent in NOISE:
                row = {"mm": mm, "orientation": orientation(sweep.image, axis), "contrast": contrast, "noise": percent,
                       **run_case(sweep.pipeline, clean, thick_spacing, percent)}
                rows.append(row)
                print(f"{mm} mm {row['orientation']} {contrast} {percent}%: "
                      + " ".join(f"{m} {row[m]['psnr']:.2f}" for m in METHODS), flush=True)
    sweep.write(markdown(rows), rows)


if __name__ == "__main__":
    main()
