"""A picture of the comparison, from the real thing: the module's logic on a slicer-core scene, the
worker process, showComparison, and the views rendered by Slicer's own slice pipeline.

    python -m MRIDenoiseLib.comparison_snapshot SCAN OUTPUT.png [--weights W] [--add-noise PERCENT]

``--add-noise`` adds Rician noise (sigma as a percentage of the robust maximum) before denoising,
for scans that are nearly clean; the caption says so. Needs slicer-core and matplotlib.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

VIEW_TITLES = (("Red", "Original"), ("Yellow", "Denoised"), ("Green", "Residual (original - denoised)"))


def model_identity(weights: Optional[str]) -> str:
    """The weights file's name and the start of its sha256, so a picture says which model made it.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "w.pt"
    >>> _ = (path.with_name("w.pt.sha256")).write_text("0123456789abcdef  w.pt")
    >>> model_identity(str(path))
    'w.pt (sha256 01234567)'
    """
    if weights is None:
        from .model import DEFAULT_WEIGHTS

        weights = str(DEFAULT_WEIGHTS)
    sums = Path(str(weights) + ".sha256")
    digest = sums.read_text().split()[0][:8] if sums.is_file() else "unknown"
    return f"{Path(weights).name} (sha256 {digest})"


def snapshot(scan: Path | str, output: Path | str, logic=None, weights: Optional[str] = None,
             add_noise_percent: float = 0.0, bias_correction: bool = False, size: tuple[int, int] = (360, 420),
             seed: int = 0) -> dict:
    """Denoise ``scan`` in a headless scene, show the comparison and save the three views; returns facts for the caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import slicer.util

    from .headless_scene import HeadlessScene
    from .slicer_logic import MRIDenoiseLogic

    laid = HeadlessScene()
    source = laid.loadVolume(scan, "Original")
    if add_noise_percent:
        from .intensity import intensity_scale
        from .noise import add_rician_noise

        clean = slicer.util.arrayFromVolume(source).astype(np.float32)
        sigma = add_noise_percent / 100.0 * intensity_scale(clean)
        slicer.util.updateVolumeFromArray(source, add_rician_noise(clean, sigma, np.random.default_rng(seed)).astype(np.float32))
    logic = logic or MRIDenoiseLogic(weights=weights)
    logic.sliceLogicLookup = laid.sliceLogicLookup
    with tempfile.TemporaryDirectory() as folder:
        logic.temporaryRoot = folder
        job = logic.process(source, biasCorrection=bias_correction, createResidual=True, waitForCompletion=False).wait()
    if job.outputVolume is None:
        raise RuntimeError(job.errorMessage)
    logic.showComparison(source, job.outputVolume, job.residualVolume)
    width, height = size
    figure, axes = plt.subplots(1, 3, figsize=(3 * width / 100, height / 100 + 0.6), dpi=100)
    for axis, (view, title) in zip(axes, VIEW_TITLES):
        axis.imshow(laid.render(view, width, height)[..., :3], interpolation="nearest")
        axis.set_title(title, fontsize=11)
        axis.axis("off")
    summary = job.summary
    caption = (f"{Path(scan).name}" + (f" + {add_noise_percent:g}% Rician noise" if add_noise_percent else "")
               + f"; estimated noise {summary['sigma_percent']:.2f}%; {job.elapsedSeconds:.1f} s on {summary['device']}"
               + ("; N4 on" if bias_correction else "") + f"\nmodel {model_identity(logic.weights)}."
               + " Same window/level left and centre; linked views.")
    figure.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=9)
    figure.tight_layout(rect=(0, 0.09, 1, 1))
    figure.savefig(output)
    plt.close(figure)
    return {"caption": caption, **summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m MRIDenoiseLib.comparison_snapshot", description=__doc__.splitlines()[0])
    parser.add_argument("scan")
    parser.add_argument("output")
    parser.add_argument("--weights")
    parser.add_argument("--add-noise", type=float, default=0.0, metavar="PERCENT")
    parser.add_argument("--n4", action="store_true", help="also correct the bias field")
    args = parser.parse_args(argv)
    facts = snapshot(args.scan, args.output, weights=args.weights, add_noise_percent=args.add_noise, bias_correction=args.n4)
    print(facts["caption"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
