"""How far a stronger classical denoiser gets on the quality benchmark's cases: BM4D, and a
sliding-window 3-D DCT Wiener filter of the noisy image steered by MRIDenoise's output.

Not part of the product: it measures the headroom left above MRIDenoise's stage two, on the
same cases and noise draws as ``benchmarks/quality.py``, against its cached peers.

- **BM4D** (``pip install bm4d``; Maggioni et al.): block matching and collaborative 4-D
  transform filtering, for Gaussian noise; run on the magnitude with the true sigma, then
  Rician-corrected as sqrt(max(x² - σ², 0)).
- **DCT Wiener** (BM3D's second step without block matching, ``MRIDenoiseLib.dct_wiener``, what
  ``--thorough`` added until the grouped step replaced it): every window of ``--block``³ voxels
  of the noisy image, ``--step`` voxels apart, is transformed (orthonormal 3-D DCT), each
  coefficient kept by the Wiener gain P² / (P² + σ²) of the pilot's (MRIDenoise's output through
  the Rician mean), the windows put back with weights 1 / Σ gain², and the result mapped through
  the inverse Rician mean; with the true sigma.
- With ``--block-matching``, the grouped Wiener step (``MRIDenoiseLib.block_matching``: BM4D's
  second stage in PyTorch, groups of 16 4x4x4 windows matched within 3 voxels on MRIDenoise's
  output, references 3 voxels apart), with the true sigma. Since MRIDenoise's default output is
  itself that step's (on its patch-means pilot), this is now a second pass of it, as the DCT
  Wiener step above is a pass after it.
- With ``--bm4d-stages``, BM4D's two stages apart: its hard-thresholding stage alone, and its
  Wiener stage alone (block matching on the pilot) with MRIDenoise's output as the pilot; both
  through the Rician mean and its inverse, as the DCT Wiener step.

    python benchmarks/headroom.py --data ../shared/data --cases "Colin27 2 mm" \
        [--bm4d] [--bm4d-stages] [--block-matching] [--block 4] [--step 1]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

from MRIDenoiseLib.block_matching import block_matched_wiener  # noqa: E402
from MRIDenoiseLib.dct_wiener import dct_wiener, rician_amplitude, rician_mean  # noqa: E402
from MRIDenoiseLib.mask import head_mask  # noqa: E402
from MRIDenoiseLib.metrics import psnr  # noqa: E402
from MRIDenoiseLib.pipeline import DenoisePipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--cache", default=str(Path(__file__).parent / "results" / "peers_cache.json"))
    parser.add_argument("--cases", default="Colin27 2 mm", help="regular expression over the case names")
    parser.add_argument("--block", type=int, default=4, help="DCT window side, voxels")
    parser.add_argument("--step", type=int, default=1, help="voxels between windows (must divide --block)")
    parser.add_argument("--bm4d", action="store_true", help="also run BM4D (about 40 s per 2 mm volume on 2 cores)")
    parser.add_argument("--block-matching", action="store_true", help="also run the grouped Wiener step")
    parser.add_argument("--bm4d-stages", action="store_true",
                        help="also run BM4D's hard-thresholding stage alone, and its Wiener stage with MRIDenoise as pilot")
    args = parser.parse_args()
    cache = json.loads(Path(args.cache).read_text())
    maker, pipeline = quality.CaseMaker(Path(args.data)), DenoisePipeline()
    for case in quality.CASES:
        if case.lesions or not re.search(args.cases, case.name):
            continue
        clean, spacing, _, _ = maker.clean(case)
        mask = head_mask(clean)
        for percent in case.noise:
            sigma = percent / 100 * float(clean.max())
            noisy = quality.case_noise(clean, percent)
            ours = pipeline.run(noisy, tuple(reversed(spacing)), bias_correction=False).denoised
            peers = [psnr(clean, noisy, mask)] + [cache[f"{case.name}|{percent}|{m}"]["psnr"] for m in ("DIPY", "ANTs")]
            scores = {"best peer": max(peers), "MRIDenoise": psnr(clean, ours, mask)}
            started = time.perf_counter()
            filtered = dct_wiener(torch.from_numpy(noisy), torch.from_numpy(ours), sigma, args.block, args.step).numpy()
            scores[f"DCT Wiener {args.block}/{args.step}"] = psnr(clean, filtered, mask)
            seconds = {"DCT": time.perf_counter() - started}
            if args.block_matching:
                started = time.perf_counter()
                grouped = block_matched_wiener(torch.from_numpy(noisy), torch.from_numpy(ours), sigma).numpy()
                seconds["grouped"] = time.perf_counter() - started
                scores["grouped Wiener"] = psnr(clean, grouped, mask)
            if args.bm4d:
                import bm4d

                started = time.perf_counter()
                estimate = np.asarray(bm4d.bm4d(noisy, sigma), dtype=np.float64)
                seconds["BM4D"] = time.perf_counter() - started
                scores["BM4D"] = psnr(clean, np.sqrt(np.maximum(estimate**2 - sigma**2, 0)), mask)
            if args.bm4d_stages:
                import bm4d

                def amplitude(estimate):
                    return rician_amplitude(torch.from_numpy(np.asarray(estimate, dtype=np.float64)), sigma).numpy()

                hard = bm4d.bm4d(noisy, sigma, stage_arg=bm4d.BM4DStages.HARD_THRESHOLDING)
                scores["BM4D hard thresholding"] = psnr(clean, amplitude(hard), mask)
                started = time.perf_counter()
                pilot = rician_mean(torch.from_numpy(ours).double(), sigma).numpy()
                scores["BM4D Wiener, MRIDenoise pilot"] = psnr(clean, amplitude(bm4d.bm4d(noisy, sigma, stage_arg=pilot)), mask)
                seconds["BM4D Wiener"] = time.perf_counter() - started
            cells = ", ".join(f"{name} {value:.2f}" for name, value in scores.items())
            times = ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
            print(f"{case.name} {percent}%: {cells} dB ({times})", flush=True)


if __name__ == "__main__":
    main()
