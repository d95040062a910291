"""Noise correlated by zero-filled interpolation: found from the image, and its sigma estimated."""

import numpy as np
import SimpleITK as sitk

from conftest import phantom

from MRIDenoiseLib.noise import add_rician_noise, estimate_noise
from MRIDenoiseLib.pipeline import DenoisePipeline
from MRIDenoiseLib.zero_filling import MIN_STEP, axis_power, half_nyquist_step, zero_filled_gain

SHAPE = (96, 112, 96)
SIGMA = 6.0


def zero_filled(volume: np.ndarray, axes=(1, 2)) -> np.ndarray:
    """``volume`` with the outer half of its k-space along ``axes`` set to zero (complex in general)."""
    spectrum = np.fft.fftn(volume)
    for axis in axes:
        n = volume.shape[axis]
        kept = np.zeros(n, bool)
        kept[: n // 4] = kept[-(n // 4):] = True
        spectrum *= kept.reshape([-1 if index == axis else 1 for index in range(volume.ndim)])
    return np.fft.ifftn(spectrum)


def scanner_zero_filled(clean: np.ndarray, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(reference, noisy magnitude) of a scan sampled at half the in-plane resolution and
    reconstructed 2x by zero-filling: anatomy and noise both cut to the inner half of k-space,
    the noise scaled to ``sigma`` per voxel and channel."""
    rng = np.random.default_rng(seed)
    noise = zero_filled(rng.normal(size=clean.shape) + 1j * rng.normal(size=clean.shape))
    noise *= sigma / np.sqrt(np.mean(noise.real**2))
    band_limited = zero_filled(clean).real
    return np.abs(band_limited).astype(np.float32), np.abs(band_limited + noise).astype(np.float32)


def test_a_zero_filled_phantom_gets_the_sigma_of_its_voxels():
    clean = phantom(SHAPE)
    _, noisy = scanner_zero_filled(clean, SIGMA)
    estimate = estimate_noise(noisy)
    assert estimate.zero_filled == (1, 2)
    assert abs(estimate.sigma / SIGMA - 1) < 0.12
    # without the correction, it reads the finest detail's share of the noise: about 0.36
    assert estimate.sigma * zero_filled_gain((1, 2)) < 0.45 * SIGMA
    white = estimate_noise(add_rician_noise(clean, SIGMA, np.random.default_rng(0)))
    assert white.zero_filled == () and abs(white.sigma / SIGMA - 1) < 0.05


def test_zero_filled_noise_is_denoised_at_its_level_and_the_user_is_told():
    clean = phantom(SHAPE)
    reference, noisy = scanner_zero_filled(clean, SIGMA, seed=1)
    before = noisy.copy()
    pipeline = DenoisePipeline()
    result = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False)
    uncorrected = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False,
                               sigma=result.sigma * zero_filled_gain((1, 2)))
    head = clean > 50
    error = np.sqrt(np.mean((result.denoised - reference)[head] ** 2))
    error_uncorrected = np.sqrt(np.mean((uncorrected.denoised - reference)[head] ** 2))
    error_noisy = np.sqrt(np.mean((noisy - reference)[head] ** 2))
    assert error < 0.8 * error_uncorrected < 0.8 * error_noisy
    assert any("zero-filling k-space along its I and J axes" in note for note in result.notes)
    assert not any("zero-filling" in note for note in uncorrected.notes)
    np.testing.assert_array_equal(noisy, before)


def test_a_real_head_zero_filled_or_not(colin27):
    """Colin27 (1 mm, nearly noise-free) with 5% noise: white noise is left as it is; zero-filled
    in-plane, the step at half Nyquist stands well above the threshold and sigma comes out right."""
    sigma = 0.05 * float(colin27.max())
    white = add_rician_noise(colin27, sigma, np.random.default_rng(2))
    steps = [half_nyquist_step(axis_power(white, axis)) for axis in range(3)]
    assert max(steps) < MIN_STEP - 0.2
    assert estimate_noise(white).zero_filled == ()
    _, noisy = scanner_zero_filled(colin27, sigma, seed=3)
    assert min(half_nyquist_step(axis_power(noisy, axis)) for axis in (1, 2)) > MIN_STEP + 0.5
    estimate = estimate_noise(noisy)
    assert estimate.zero_filled == (1, 2)
    assert abs(estimate.sigma / sigma - 1) < 0.1


def test_no_raw_training_scan_looks_zero_filled(shared_data):
    for path in sorted((shared_data / "train/t1_1mm").glob("*.nii.gz")):
        scan = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        assert max(half_nyquist_step(axis_power(scan, axis)) for axis in range(3)) < MIN_STEP - 0.3, path.name
