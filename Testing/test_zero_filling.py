"""Noise correlated by zero-filled interpolation: found from the image, and its sigma estimated."""

import numpy as np
import SimpleITK as sitk
import torch

from conftest import phantom

from MRIDenoiseLib.benchmark_cases import hamming_window, partial_fourier_scan, zero_filled_scan
from MRIDenoiseLib.block_matching import block_matched_wiener
from MRIDenoiseLib.dct_wiener import BLOCK
from MRIDenoiseLib.noise import add_rician_noise, estimate_noise
from MRIDenoiseLib.noise_field import estimate_noise_field
from MRIDenoiseLib.pipeline import DenoisePipeline
from MRIDenoiseLib.zero_filling import MIN_STEP, half_nyquist_steps, zero_filled_correlation

SHAPE = (96, 112, 96)
SIGMA = 6.0
# What the finest detail of an image zero-filled in-plane keeps of its noise's sigma, sqrt(1 - 2/pi)
# per axis: the sigma a reading that took the noise for white would give.
WHITE_NOISE_READING = 1 - 2 / np.pi


def scanner_zero_filled(clean: np.ndarray, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return zero_filled_scan(clean, sigma, np.random.default_rng(seed))


def grouped_step_errors(clean: np.ndarray, reference: np.ndarray, noisy: np.ndarray, correlations) -> list[float]:
    """RMS error in the phantom's head (``clean`` above 50) against ``reference`` of the grouped
    step over ``noisy``, on the default's output as its pilot, told each of ``correlations``:
    the same pilot, windows and groups, only the gains differ."""
    result = DenoisePipeline().run(noisy, (1.0, 1.0, 1.0), bias_correction=False)
    head = clean > 50
    errors = []
    with torch.inference_mode():
        for correlation in correlations:
            step = block_matched_wiener(torch.from_numpy(noisy), torch.from_numpy(result.denoised), result.sigma,
                                        noise_correlation=correlation).numpy()
            errors.append(float(np.sqrt(np.mean((step - reference)[head] ** 2))))
    return errors


def test_a_zero_filled_phantom_gets_the_sigma_of_its_voxels():
    clean = phantom(SHAPE)
    _, noisy = scanner_zero_filled(clean, SIGMA)
    estimate = estimate_noise(noisy)
    assert estimate.zero_filled == (1, 2)
    assert abs(estimate.sigma / SIGMA - 1) < 0.12
    white = estimate_noise(add_rician_noise(clean, SIGMA, np.random.default_rng(0)))
    assert white.zero_filled == () and abs(white.sigma / SIGMA - 1) < 0.05


def test_zero_filled_noise_is_denoised_at_its_level_on_the_sampled_grids_and_the_user_is_told():
    clean = phantom(SHAPE)
    reference, noisy = scanner_zero_filled(clean, SIGMA, seed=1)
    before = noisy.copy()
    pipeline = DenoisePipeline()
    result = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False)
    uncorrected = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False,
                               sigma=result.sigma * WHITE_NOISE_READING)
    head = clean > 50
    error = np.sqrt(np.mean((result.denoised - reference)[head] ** 2))
    error_uncorrected = np.sqrt(np.mean((uncorrected.denoised - reference)[head] ** 2))
    error_noisy = np.sqrt(np.mean((noisy - reference)[head] ** 2))
    # measured: 2.80, 5.47 and 5.99 (sigma 1.06 of the truth, estimated on one sampled grid)
    assert error < 0.6 * error_noisy and error < 0.7 * error_uncorrected
    assert result.notes == ["the image looks interpolated 2x by zero-filling k-space along its I and J axes, so its "
                            "noise is correlated between neighbouring voxels: sigma was estimated on one of the grids "
                            "it was sampled on (every other voxel along those axes), and each of the 4 grids it was "
                            "sampled on was denoised apart, then the whole image, guided by their result"]
    # a sigma given: the sampled grids all the same, the same output
    given = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=result.sigma)
    np.testing.assert_array_equal(given.denoised, result.denoised)
    assert given.notes[0].endswith("neighbouring voxels: each of the 4 grids it was sampled on was denoised apart, then "
                                   "the whole image, guided by their result")
    assert result.zero_filled == given.zero_filled == (1, 2) and uncorrected.zero_filled == (1, 2)
    # --preserve-detail: the local means given back over the whole image, after its step
    detail = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, preserve_detail=True)
    error_detail = np.sqrt(np.mean((detail.denoised - reference)[head] ** 2))
    assert error_detail < 0.6 * error_noisy and detail.notes == result.notes  # measured: 3.06
    np.testing.assert_array_equal(noisy, before)


def test_the_grouped_step_told_the_noise_is_zero_filled_keeps_less_of_it():
    """The same pilot, the same windows and groups: gains that know how the zero-filled noise
    spreads over a window's frequencies (little of it at the highest, nearly twice white noise's
    at the lowest) beat gains that take it for white."""
    clean = phantom(SHAPE)
    reference, noisy = scanner_zero_filled(clean, SIGMA, seed=1)
    error_white, error_told = grouped_step_errors(clean, reference, noisy, (None, zero_filled_correlation((1, 2), BLOCK)))
    assert error_told < 0.93 * error_white  # measured: 2.58 against 2.87


def test_a_k_space_window_before_the_zero_filling_is_read_on_the_sampled_grid():
    """A Hamming window over the k-space the scanner sampled, then zero-filled 2x in-plane: on the
    sampled grid the noise is still low-passed (its Haar detail reads 0.39 of sigma), so the
    check there raises sigma (to 1.02 of the truth) and reads the grid's correlation; the
    whole-image step, told the correlation that follows from it, beats one told the grid's noise
    is white."""
    clean = phantom(SHAPE)
    reference, noisy = zero_filled_scan(clean, SIGMA, np.random.default_rng(1), window=hamming_window)
    estimate = estimate_noise(noisy)
    assert estimate.zero_filled == (1, 2) and estimate.raised and estimate.finest < 0.5 * SIGMA
    assert abs(estimate.sigma / SIGMA - 1) < 0.1
    assert np.all(estimate.correlation[1:, 1] > 0.5)  # measured 0.68 and 0.61
    error_white, error_told = grouped_step_errors(
        clean, reference, noisy, [zero_filled_correlation((1, 2), BLOCK, sampled) for sampled in (None, estimate.correlation)])
    assert error_told < 0.985 * error_white  # measured: 3.70 against 3.79


def test_a_real_head_zero_filled_or_not(colin27):
    """Colin27 (1 mm, nearly noise-free) with 5% noise: white noise and a partial Fourier
    acquisition are left as they are; zero-filled in-plane, the step at half Nyquist stands far
    above the threshold and sigma comes out right."""
    sigma = 0.05 * float(colin27.max())
    white = add_rician_noise(colin27, sigma, np.random.default_rng(2))
    assert max(half_nyquist_steps(white).values()) < MIN_STEP - 1
    assert estimate_noise(white).zero_filled == ()
    _, partial = partial_fourier_scan(colin27, sigma, np.random.default_rng(4))
    assert max(half_nyquist_steps(partial).values()) < MIN_STEP - 0.5
    _, noisy = scanner_zero_filled(colin27, sigma, seed=3)
    steps = half_nyquist_steps(noisy)
    assert min(steps[1], steps[2]) > MIN_STEP + 2 and steps[0] < MIN_STEP - 1
    estimate = estimate_noise(noisy)
    assert estimate.zero_filled == (1, 2)
    assert abs(estimate.sigma / sigma - 1) < 0.1


def test_a_noise_level_that_varies_across_a_zero_filled_head_is_mapped_where_it_varies(colin27):
    # 5% noise times a ramp of 0.6 to 1.4 along I (a coil's falloff, a g-factor), zero-filled 2x
    # in-plane: sigma is estimated on a sampled grid, the relative map on the whole image's
    # blocks (measured 0.72 / 0.83 / 0.96 / 1.10 / 1.25 against the ramp's 0.73 to 1.27; on the
    # grid's blocks alone the map flattened to 1.13 at the high end).
    ramp = np.linspace(0.6, 1.4, colin27.shape[2], dtype=np.float32)
    _, noisy = zero_filled_scan(colin27, 0.05 * float(colin27.max()) * ramp, np.random.default_rng(0))
    estimate = estimate_noise(noisy)
    assert estimate.zero_filled == (1, 2)
    field = estimate_noise_field(estimate.blocks, estimate.finest)
    assert field.varies
    along = [30, 60, 90, 120, 150]
    np.testing.assert_allclose(field.on_grid(noisy.shape)[90, 108, along], ramp[along], atol=0.07)


def test_no_raw_training_scan_looks_zero_filled(shared_data):
    for path in sorted((shared_data / "train/t1_1mm").glob("*.nii.gz")):
        scan = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)
        assert max(half_nyquist_steps(scan).values()) < MIN_STEP - 1, path.name
