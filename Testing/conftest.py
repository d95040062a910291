"""Shared fixtures: real images that ship with our dependencies, the shared scans when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MRIDenoiseLib.demo import template_path
from MRIDenoiseLib.model import save_weights
from MRIDenoiseLib.network import DenoiserNet, NetworkConfig
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.training import real_noise

REPO = Path(__file__).resolve().parents[1]
TINY_NETWORK = NetworkConfig(channels=(8, 16), strides=(2,), num_res_units=1)

torch.set_num_threads(2)


def shared_data_dir() -> Path:
    return Path(os.environ.get("MRIDENOISE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = shared_data_dir()
    if not (folder / "train").is_dir():
        pytest.skip(f"shared scans not found at {folder} (set MRIDENOISE_DATA or put ../shared beside the checkout)")
    return folder


@pytest.fixture(scope="session")
def colin27(shared_data) -> np.ndarray:
    """Colin27, 181x217x181 at 1 mm: a held-out validation scan, never trained on."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "train/t1_1mm/colin27_ch2_1mm.nii.gz"))).astype(np.float32)


@pytest.fixture(scope="session")
def mni_t1() -> np.ndarray:
    """The MNI152 2009 T1 template that nilearn ships (197x233x189, 1 mm, very low noise)."""
    return sitk.GetArrayFromImage(sitk.ReadImage(str(template_path()))).astype(np.float32)


@pytest.fixture(scope="session")
def epi_pair() -> tuple[np.ndarray, np.ndarray]:
    """Two time points of a real EPI from nibabel: their difference is scanner noise only."""
    pair = real_noise.epi_pair()
    return pair.first, pair.second


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """An untrained small network with a valid checksum: for plumbing tests that need speed, not quality."""
    torch.manual_seed(0)
    return save_weights(DenoiserNet(TINY_NETWORK), tmp_path_factory.mktemp("weights") / "tiny.pt")


def phantom(shape=(40, 48, 44), seed: int = 0) -> np.ndarray:
    """A head-like phantom: an ellipsoid of 'white matter' with darker shells and smooth texture."""
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    radius = np.sqrt((z / 0.85) ** 2 + (y / 0.9) ** 2 + (x / 0.8) ** 2)
    image = np.where(radius < 1.0, 60.0, 0.0) + np.where(radius < 0.8, 40.0, 0.0) + np.where(radius < 0.5, 30.0, 0.0)
    texture = np.random.default_rng(seed).normal(size=shape)
    from scipy import ndimage

    image += 8.0 * ndimage.gaussian_filter(texture, 3) * (radius < 1.0)
    return np.clip(image, 0, None).astype(np.float32)


def write_volume(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


def textured_series(volumes=4, sigma=6.0, seed=0):
    """Repeated scans of one phantom whose tissue carries fine texture as strong as the noise
    (what coarse real scans hold, and what inflates a single volume's estimate), noise independent."""
    rng = np.random.default_rng(seed)
    clean = phantom((40, 48, 44), seed)
    clean = np.where(clean > 20, clean + rng.normal(0.0, sigma, clean.shape), clean)
    return np.stack([add_rician_noise(clean, sigma, rng) for _ in range(volumes)])
