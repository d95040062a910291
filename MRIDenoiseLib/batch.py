"""Denoising files: read, run the pipeline, write the output (and bias field and residual) atomically."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .io import InputError, image_like, read_image, refuse_same_path, write_images
from .pipeline import DenoisePipeline, DenoiseResult


def denoise_file(
    input_path: Path | str,
    output_path: Path | str,
    bias_correction: bool = True,
    device: str = "auto",
    save_bias: Optional[Path | str] = None,
    save_residual: Optional[Path | str] = None,
    sigma: Optional[float] = None,
    volume: Optional[int] = None,
    weights: Optional[Path | str] = None,
    pipeline: Optional[DenoisePipeline] = None,
    reporter=None,
) -> DenoiseResult:
    """Denoise one scan into ``output_path``; the input is only read, never written."""
    if save_bias is not None and not bias_correction:
        raise InputError("--save-bias needs bias correction: drop --no-n4")
    for extra in (output_path, save_bias, save_residual):
        if extra is not None:
            refuse_same_path(input_path, extra)
    started = time.perf_counter()
    image = read_image(input_path, volume)
    read_seconds = time.perf_counter() - started
    pipeline = pipeline or DenoisePipeline(weights=weights)
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    progress = reporter.progress if reporter is not None else None
    result = pipeline.run(array, image.GetSpacing(), bias_correction=bias_correction, device=device,
                          sigma=sigma, progress=progress)
    outputs = [(image_like(result.denoised, image), output_path)]
    if save_bias is not None:
        outputs.append((image_like(result.bias_field, image), save_bias))
    if save_residual is not None:
        outputs.append((image_like(result.residual, image), save_residual))
    started_write = time.perf_counter()
    write_images(outputs)
    if reporter is not None:
        for note in result.notes:
            reporter.line(f"note: {note}")
        reporter.line(f"estimated noise sigma: {result.sigma:.4g} ({result.sigma_percent:.2f}% of the robust maximum)")
        timings = {"read": read_seconds, "model load": pipeline.load_seconds, **result.seconds,
                   "write": time.perf_counter() - started_write}
        reporter.line("time: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in timings.items())
                      + f"; total {time.perf_counter() - started:.2f} s on {result.device}")
        reporter.line(f"wrote {output_path}" + "".join(f", {p}" for _, p in outputs[1:]))
    return result
