"""Quality table: noisy input, DIPY NLM, ANTs DenoiseImage and MRIDenoise on held-out scans.

    python benchmarks/quality.py --data ../shared/data --out benchmarks/results/quality.md

Held-out scans only (never trained on): Colin27 at 1 mm and two IXI subjects at 2 mm. Rician
noise at 3, 5 and 9% of each scan's maximum, with fixed seeds. PSNR (peak = maximum of the clean
scan) and 3-D SSIM inside the head mask of the clean scan. Peers are run as a user would run them:
DIPY ``nlmeans(rician=True)`` with sigma from DIPY's ``estimate_sigma``; ANTs
``denoise_image(noise_model="Rician")``. Peer results can be cached (``--cache``) because they do
not depend on this repository's code; MRIDenoise is always recomputed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MRIDenoiseLib.evaluation import evaluate_arrays
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.pipeline import DenoisePipeline

CASES = {
    "Colin27 1 mm": "train/t1_1mm/colin27_ch2_1mm.nii.gz",
    "IXI080 2 mm": "train/ixi_t1_2mm/IXI080-HH-1341_T1.nii.gz",
    "IXI130 2 mm": "train/ixi_t1_2mm/IXI130-HH-1528_T1.nii.gz",
}
NOISE_PERCENT = (3, 5, 9)
METHODS = ("noisy", "DIPY", "ANTs", "MRIDenoise")


def run_dipy(noisy: np.ndarray) -> np.ndarray:
    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma

    sigma = estimate_sigma(noisy, N=1)
    return nlmeans(noisy, sigma=sigma, rician=True)


def run_ants(noisy: np.ndarray, spacing) -> np.ndarray:
    import ants

    image = ants.from_numpy(noisy.transpose(2, 1, 0).copy(), spacing=tuple(spacing))
    return ants.denoise_image(image, noise_model="Rician").numpy().transpose(2, 1, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", help="write the markdown table here as well")
    parser.add_argument("--cache", help="JSON file for peer results (DIPY, ANTs)")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--peers-only", action="store_true", help="only fill the peer cache")
    args = parser.parse_args()

    cache = json.loads(Path(args.cache).read_text()) if args.cache and Path(args.cache).is_file() else {}
    pipeline = DenoisePipeline()
    methods = METHODS[:3] if args.peers_only else METHODS
    rows = []
    for case, relative in CASES.items():
        image = sitk.ReadImage(str(Path(args.data) / relative))
        clean = sitk.GetArrayFromImage(image).astype(np.float32)
        mask = head_mask(clean)
        for percent in NOISE_PERCENT:
            noisy = add_rician_noise(clean, percent / 100 * float(clean.max()), np.random.default_rng(1000 + percent))
            row = {"case": case, "noise": percent}
            for method in methods:
                key = f"{case}|{percent}|{method}"
                if method in ("DIPY", "ANTs") and key in cache:
                    row[method] = cache[key]
                    continue
                started = time.perf_counter()
                if method == "noisy":
                    result = noisy
                elif method == "DIPY":
                    result = run_dipy(noisy)
                elif method == "ANTs":
                    result = run_ants(noisy, image.GetSpacing())
                else:
                    result = pipeline.run(noisy, image.GetSpacing(), bias_correction=False).denoised
                row[method] = {**evaluate_arrays(clean, result, mask), "seconds": time.perf_counter() - started}
                if method in ("DIPY", "ANTs"):
                    cache[key] = row[method]
                    if args.cache:
                        Path(args.cache).write_text(json.dumps(cache, indent=1))
            rows.append(row)
            if not args.peers_only:
                print(format_row(row), flush=True)
    if args.peers_only:
        return
    table = format_table(rows)
    print(table)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(table + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def format_row(row: dict) -> str:
    cells = [f"{row[m]['psnr']:.2f} / {row[m]['ssim']:.3f}" for m in METHODS]
    gain = row["MRIDenoise"]["psnr"] - row["noisy"]["psnr"]
    best_peer = max(row[m]["psnr"] for m in ("noisy", "DIPY", "ANTs"))
    return (f"| {row['case']} | {row['noise']}% | " + " | ".join(cells)
            + f" | {gain:+.2f} | {row['MRIDenoise']['psnr'] - best_peer:+.2f} |")


def format_table(rows: list[dict]) -> str:
    header = ("| scan | noise | noisy | DIPY nlmeans | ANTs DenoiseImage | MRIDenoise | MRIDenoise vs noisy (dB) "
              "| MRIDenoise vs best other (dB) |\n|---|---|---|---|---|---|---|---|")
    seconds = np.median([r["MRIDenoise"]["seconds"] for r in rows if r["case"].endswith("1 mm")])
    footer = ("\nCells: PSNR (dB) / SSIM inside the head. MRIDenoise took a median of "
              f"{seconds:.1f} s per 1 mm volume in this run (noise estimate and network, no N4, model loaded once). "
              "Peer timings are not compared here: cached peer runs shared the machine with training.")
    return header + "\n" + "\n".join(format_row(r) for r in rows) + "\n" + footer


if __name__ == "__main__":
    main()
