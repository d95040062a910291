"""Do no harm on real scanner noise: nibabel's two-volume EPI, whose volumes differ by noise alone.

The second volume's noise is independent of the first's, so the denoised first volume's mean
squared difference to the second, over the raw first volume's, ranks methods without a clean
truth: below 1 the denoiser helps. Synthetic validation cases can reward what real data punish
(a stage-one guide without the unsmoothed copy did both: TRAINING_RUNS.md), so training checks
this pair too. The sigma is estimated, as it is for a user's scan.

>>> pair = epi_pair()
>>> pair.first.shape, pair.first.dtype, round(float(pair.mask.mean()), 2)
((128, 96, 24), dtype('float32'), 0.37)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from ..mask import head_mask
from ..noise import estimate_sigma
from .grouped_step import objective_output


@dataclass(frozen=True)
class RealPair:
    """Two time points of one real scan, and the head mask of the first."""

    first: np.ndarray
    second: np.ndarray
    mask: np.ndarray


def nibabel_series(name: str) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 4-D test series that ships with nibabel, as stored (x, y, z, t) in float32, and its voxel
    size (x, y, z) in mm."""
    image = nib.load(str(Path(nib.__file__).parent / "tests" / "data" / name))
    return np.asarray(image.dataobj, dtype=np.float32), tuple(float(z) for z in image.header.get_zooms()[:3])


def epi_pair() -> RealPair:
    """The first two volumes of nibabel's ``example4d`` (2 x 2 x 2.2 mm EPI)."""
    data, _ = nibabel_series("example4d.nii.gz")
    first, second = data[..., 0], data[..., 1]
    return RealPair(first, second, head_mask(first))


def harm_ratio(network, pair: RealPair, device: torch.device | str = "cpu", objective: str = "network") -> float:
    """Squared difference to the second volume in the head: denoised first volume over raw first
    volume (denoised as ``objective`` asks, ``grouped_step.objective_output``)."""
    denoised = objective_output(network, pair.first, estimate_sigma(pair.first), device, objective)
    raw = float(((pair.first - pair.second)[pair.mask] ** 2).mean())
    return float(((denoised - pair.second)[pair.mask] ** 2).mean()) / raw
