"""The training data: a fixed split of the real scans, and a seeded sampler of degraded patches.

The split is a rule on file names, so it never changes with the order files are listed in:
IXI subjects whose number ends in 0, and Colin27, are validation only and never trained on.

>>> is_validation("IXI120-HH-1234_T1.nii.gz"), is_validation("IXI121-HH-1234_T1.nii.gz")
(True, False)
>>> is_validation("colin27_ch2_1mm.nii.gz")
True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import nibabel as nib
import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAxisFlipd,
    RandBiasFieldd,
    RandCropByPosNegLabeld,
    RandGaussianSmoothd,
    RandRotate90d,
    RandSpatialCropd,
    RandZoomd,
    SpatialPadd,
)
from scipy import ndimage

from ..input_checks import InputError, check_voxels
from ..mask import head_mask
from .degradations import NormaliseIntensityd, RandContrastRemapd, RandLesionsd, RandRicianNoised, RandThickSlicesd

VALIDATION_NAMES = ("colin27",)
TRAINING_VOXEL_MM = 1.0
REGION_VOXELS = 128
FINE_SCAN_SHARE = 0.25
MIN_SCAN_VOXELS = 16  # one patch of the network's size multiple: thinner scans are not trained on


def is_validation(file_name: str) -> bool:
    """The fixed split: IXI numbers ending in 0, and the scans named in VALIDATION_NAMES."""
    match = re.match(r"IXI(\d+)", file_name)
    if match:
        return int(match.group(1)) % 10 == 0
    return any(name in file_name for name in VALIDATION_NAMES)


def scan_paths(data_dir: Path | str) -> list[Path]:
    """The NIfTI files under ``data_dir``; hidden files (``._scan.nii.gz`` from macOS, say) are not scans."""
    return sorted(p for p in Path(data_dir).rglob("*")
                  if p.is_file() and p.name.endswith((".nii", ".nii.gz")) and not p.name.startswith("."))


def split(data_dir: Path | str) -> tuple[list[Path], list[Path]]:
    """(training, validation) scan paths under ``data_dir``."""
    paths = scan_paths(data_dir)
    return [p for p in paths if not is_validation(p.name)], [p for p in paths if is_validation(p.name)]


@dataclass
class Scan:
    """A clean volume in [0, 1], channel first, with its head mask and voxel size."""

    volume: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]

    def as_sample(self) -> dict:
        return {"target": self.volume, "mask": self.mask, "spacing": self.spacing}


class TrainingScan(Protocol):
    """What batches are drawn from: a ``Scan`` in memory, or a ``scan_cache.CachedScan`` on disk."""

    spacing: tuple[float, float, float]

    def as_sample(self) -> dict: ...


def training_zoom(spacing) -> np.ndarray | None:
    """Zoom factors that bring voxels finer than 1 mm (by more than 10%) to 1 mm; None if none are.

    >>> training_zoom((0.7, 0.7, 1.2)).tolist(), training_zoom((0.95, 1.0, 2.0))
    ([0.7, 0.7, 1.0], None)
    """
    spacing = np.asarray(spacing, dtype=float)
    if spacing.min() >= TRAINING_VOXEL_MM * 0.9:
        return None
    return np.minimum(spacing / TRAINING_VOXEL_MM, 1.0)


def load_scan(path: Path | str) -> Scan:
    """Load as closest-canonical orientation; voxels finer than 1 mm are resampled to 1 mm.

    Raises InputError, naming the file, for what cannot be trained on: unreadable, not one 3-D
    volume, thinner than MIN_SCAN_VOXELS along an axis, or voxels ``check_voxels`` refuses.
    """
    try:
        image = nib.load(str(path))
        if len(image.shape) != 3 or min(image.shape) < MIN_SCAN_VOXELS:
            raise InputError(f"{path}: a 3-D volume of at least {MIN_SCAN_VOXELS} voxels along every axis is needed, "
                             f"not {' x '.join(map(str, image.shape))}")
        image = nib.as_closest_canonical(image)
        volume = np.asarray(image.dataobj, dtype=np.float32)
    except InputError:
        raise
    except Exception as error:  # nibabel raises many types for damaged files
        raise InputError(f"{path}: not a readable scan ({type(error).__name__}: {str(error).strip()[:120]})") from None
    check_voxels(volume, str(path))
    spacing = np.array(image.header.get_zooms()[:3], dtype=float)
    zoom = training_zoom(spacing)
    if zoom is not None:
        volume = ndimage.zoom(volume, zoom, order=1)
        spacing = spacing / zoom
    volume = np.clip(volume, 0, None) / max(float(volume.max()), 1e-6)
    return Scan(volume[None], head_mask(volume)[None], tuple(float(s) for s in spacing))


def load_scans(paths: list[Path], skipped: Callable[[Path, str], None]) -> list[Scan]:
    """The scans of ``paths`` that can be trained on; ``skipped(path, reason)`` hears of the others,
    so that a few broken files in a large archive do not end the run."""
    scans = []
    for path in paths:
        try:
            scans.append(load_scan(path))
        except InputError as error:
            skipped(path, str(error))
    return scans


def degradation(patch: int, patches_per_scan: int, smoothing: bool = True, lesions: bool = False,
                noise_only: bool = False) -> Compose:
    """The random chain from a clean scan to ``patches_per_scan`` (noisy, clean) patch pairs.

    ``smoothing=False`` leaves out the zoom and point-spread augmentations: anatomy only as sharp
    as the scans themselves. ``noise_only=True`` leaves out those and the contrast remap, the bias
    field and the thick slices too: the scans as they are, cropped, flipped and turned, with
    noise. ``lesions=True`` inserts synthetic lesions and adds the loss's ``"weight"`` to each
    patch (``RandLesionsd``).
    """
    smoothing_share = 0.0 if noise_only or not smoothing else 1.0
    scan_share = 0.0 if noise_only else 1.0
    spatial = ["target", "mask"]
    weighted = ["weight"] if lesions else []
    pair = ["image", "target", "mask", *weighted]
    return Compose(
        [
            RandSpatialCropd(spatial, roi_size=REGION_VOXELS, random_size=False),
            # Zooming in makes anatomy smoother per voxel, as on finer or smoother scans than
            # the sharp 2 mm IXI majority; without it the network learns never to smooth.
            RandZoomd(spatial, prob=0.6 * smoothing_share, min_zoom=1.0, max_zoom=2.0, mode=("trilinear", "nearest"),
                      keep_size=True),
            # MRI signal is band-limited (k-space truncation, apodisation, interpolating
            # reconstructions) while its noise is white: a random point-spread width teaches
            # the network to tell the two apart instead of treating all fine texture as anatomy.
            RandGaussianSmoothd(["target"], prob=0.5 * smoothing_share,
                                sigma_x=(0.4, 1.2), sigma_y=(0.4, 1.2), sigma_z=(0.4, 1.2)),
            RandAxisFlipd(spatial, prob=0.5),
            RandRotate90d(spatial, prob=0.5, spatial_axes=(0, 1)),
            RandContrastRemapd(["target"], prob=0.7 * scan_share),
            *([RandLesionsd(["target"])] if lesions else []),
            RandBiasFieldd(["target"], prob=0.5 * scan_share, degree=3, coeff_range=(0.0, 0.1)),
            RandThickSlicesd([*spatial, *weighted], prob=0.5 * scan_share),
            RandRicianNoised(["target"]),
            NormaliseIntensityd(),
            SpatialPadd(pair, spatial_size=(patch, patch, patch)),
            RandCropByPosNegLabeld(
                ["image", "target", *weighted], label_key="mask", spatial_size=(patch, patch, patch),
                pos=1.0, neg=0.0, num_samples=patches_per_scan, allow_smaller=True,
            ),
        ]
    )


def sampling_probabilities(scans: list[TrainingScan], fine_share: float = FINE_SCAN_SHARE) -> np.ndarray:
    """Scans with voxels of 1.2 mm or finer are few but drawn ``fine_share`` of the time.

    >>> fine = Scan(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), bool), (1.0, 1.0, 1.0))
    >>> coarse = Scan(np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2, 2), bool), (2.0, 2.0, 2.0))
    >>> sampling_probabilities([fine, coarse, coarse, coarse]).round(3).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> sampling_probabilities([fine, coarse, coarse, coarse, coarse, coarse, coarse]).round(3).tolist()[:2]
    [0.25, 0.125]
    """
    fine = np.array([min(scan.spacing) <= 1.2 for scan in scans])
    if fine.all() or not fine.any():
        return np.full(len(scans), 1.0 / len(scans))
    share = max(fine_share, fine.mean())
    return np.where(fine, share / fine.sum(), (1 - share) / (~fine).sum())


class PatchSampler:
    """Batch number ``step`` is a pure function of ``(seed, step)``: resumed runs repeat it exactly."""

    def __init__(self, scans: list[TrainingScan], patch: int = 64, scans_per_step: int = 2, patches_per_scan: int = 2,
                 seed: int = 0, smoothing: bool = True, lesions: bool = False, noise_only: bool = False):
        if not scans:
            raise ValueError("no training scans")
        self.scans, self.seed, self.scans_per_step = scans, seed, scans_per_step
        self.chain = degradation(patch, patches_per_scan, smoothing, lesions, noise_only)
        self.probabilities = sampling_probabilities(scans)

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        """(noisy, clean, sigma) tensors for this step, and the loss's weights when lesions are inserted."""
        rng = np.random.default_rng([self.seed, step])
        samples = []
        for _ in range(self.scans_per_step):
            scan = self.scans[int(rng.choice(len(self.scans), p=self.probabilities))]
            self.chain.set_random_state(seed=int(rng.integers(2**31)))
            samples.extend(self.chain(scan.as_sample()))
        noisy = torch.stack([torch.as_tensor(np.asarray(s["image"])) for s in samples])
        clean = torch.stack([torch.as_tensor(np.asarray(s["target"])) for s in samples])
        sigma = torch.tensor([float(s["sigma"]) for s in samples])
        if "weight" in samples[0]:
            weight = torch.stack([torch.as_tensor(np.asarray(s["weight"])) for s in samples])
            return noisy.float(), clean.float(), sigma, weight.float()
        return noisy.float(), clean.float(), sigma
