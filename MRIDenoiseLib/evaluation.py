"""``mridenoise evaluate``: PSNR and SSIM of result files against a reference file, inside the head."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from .io import InputError, read_any_image, read_image
from .mask import head_mask
from .metrics import psnr, ssim


def _array(path: Path | str) -> np.ndarray:
    return sitk.GetArrayFromImage(read_image(path)).astype(np.float32)


def evaluate_arrays(reference: np.ndarray, result: np.ndarray, mask: Optional[np.ndarray] = None) -> dict:
    """PSNR (peak = reference maximum) and SSIM over ``mask`` (default: the reference's head mask)."""
    if reference.shape != result.shape:
        raise InputError(f"shapes differ: reference {reference.shape}, result {result.shape}")
    mask = head_mask(reference) if mask is None else mask
    if mask.shape != reference.shape:
        raise InputError(f"shapes differ: reference {reference.shape}, mask {mask.shape}")
    if not mask.any():
        raise InputError("the mask holds no voxel")
    return {"psnr": psnr(reference, result, mask), "ssim": ssim(reference, result, mask)}


def evaluate_files(reference_path, result_paths, mask_path=None) -> list[dict]:
    reference = _array(reference_path)
    # A mask is read as it is: one of ones alone, or of two labels, is no image to denoise but a fine mask.
    mask = sitk.GetArrayFromImage(read_any_image(mask_path)) > 0 if mask_path else head_mask(reference)
    return [{"result": str(path), **evaluate_arrays(reference, _array(path), mask)} for path in result_paths]
