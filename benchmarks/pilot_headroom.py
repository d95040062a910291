"""How much of the default's shortfall is its pilot's: the grouped step given better pilots.

Not part of the product. On the quality benchmark's cases and noise draws (``benchmarks/quality.py``),
sigma estimated as the pipeline does, the default's grouped step (``pipeline.wiener_step``,
DEFAULT_SEARCH) is run on the same noisy volume with other pilots than its own (the patch means of
that volume, ``pipeline.pilot_step``):

- **independent draw**: the patch means of another noise draw of the same clean case: a pilot as
  good as its own, whose errors owe nothing to this volume's noise;
- **error x F**: the clean case plus F times its own pilot's error (the same error pattern, smaller);
- **clean**: the clean case itself (a perfect pilot: what the step could give at best).

Each is reported with its pilot's PSNR and the step's, and the step's margin over the best of the
noisy input, DIPY and ANTs (from the peers' cache). It measures what a better pilot (a trained
network's, say) is worth to the step, before anyone trains one.

    python benchmarks/pilot_headroom.py --data ../shared/data --cases "IXI080 2 mm$|IXI130|Colin27 2 mm T2"
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

from MRIDenoiseLib.local_means import local_mean_kernel  # noqa: E402
from MRIDenoiseLib.mask import head_mask  # noqa: E402
from MRIDenoiseLib.metrics import psnr  # noqa: E402
from MRIDenoiseLib.noise import add_rician_noise, estimate_sigma  # noqa: E402
from MRIDenoiseLib.pipeline import DEFAULT_SEARCH, pilot_step, wiener_step  # noqa: E402

SHARES = (0.5, 0.25)
OTHER_DRAW_SEED = 7  # not one of quality.case_noise's seeds (1000 + the noise level)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--cache", default=str(Path(__file__).parent / "results" / "peers_cache.json"))
    parser.add_argument("--cases", default="IXI080 2 mm$|IXI130", help="regular expression over the case names")
    args = parser.parse_args()
    cache = json.loads(Path(args.cache).read_text())
    maker, cpu = quality.CaseMaker(Path(args.data)), torch.device("cpu")
    print("| case | noise | best peer | pilot -> step (margin), dB: own | independent draw | "
          + " | ".join(f"error x {share:g}" for share in SHARES) + " | clean |")
    print("|---|---|---|---|---|" + "---|" * len(SHARES) + "---|")
    for case in quality.CASES:
        if case.lesions or not re.search(args.cases, case.name):
            continue
        clean, spacing, _, _ = maker.clean(case)
        mask, kernel = head_mask(clean), local_mean_kernel(spacing)
        for percent in case.noise:
            noisy = quality.case_noise(clean, percent)
            sigma = estimate_sigma(noisy)
            best = max([psnr(clean, noisy, mask)] + [cache[f"{case.name}|{percent}|{m}"]["psnr"] for m in ("DIPY", "ANTs")])

            def patch_means(volume: np.ndarray) -> np.ndarray:
                return pilot_step(volume, sigma, kernel, cpu, print)

            own = patch_means(noisy)
            other = add_rician_noise(clean, percent / 100 * float(clean.max()), np.random.default_rng(OTHER_DRAW_SEED))
            pilots = [own, patch_means(other), *(clean + share * (own - clean) for share in SHARES), clean]
            cells = []
            for pilot in pilots:
                step = wiener_step(noisy, pilot.astype(np.float32), sigma, cpu, DEFAULT_SEARCH, lambda share: None, print)
                score = psnr(clean, step, mask)
                quality_of_pilot = "clean" if pilot is clean else f"{psnr(clean, pilot, mask):.2f}"
                cells.append(f"{quality_of_pilot} -> {score:.2f} ({score - best:+.2f})")
            print(f"| {case.name} | {percent}% | {best:.2f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
