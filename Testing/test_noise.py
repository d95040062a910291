import numpy as np
import pytest
import torch

from conftest import textured_series

from MRIDenoiseLib import dct_wiener, noise
from MRIDenoiseLib.benchmark_cases import remap_contrast, thick_slices
from MRIDenoiseLib.local_means import local_mean_kernel
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.noise import add_rician_noise, estimate_sigma, estimate_sigma_from_series, estimate_sigma_in_series
from MRIDenoiseLib.pipeline import DEFAULT_SEARCH, DenoisePipeline, pilot_step, wiener_step


def test_rician_noise_has_the_right_statistics():
    rng = np.random.default_rng(1)
    background = add_rician_noise(np.zeros((64, 64, 64)), 10.0, rng)
    # Rayleigh: mean sigma*sqrt(pi/2); bright signal: Gaussian with the same sigma.
    assert background.mean() == pytest.approx(10.0 * np.sqrt(np.pi / 2), rel=0.01)
    bright = add_rician_noise(np.full((64, 64, 64), 1000.0), 10.0, rng)
    assert bright.std() == pytest.approx(10.0, rel=0.01)


@pytest.mark.parametrize("percent", [1, 3, 5, 9])
def test_sigma_within_20_percent_on_the_mni_template(mni_t1, percent):
    sigma = percent / 100 * mni_t1.max()
    noisy = add_rician_noise(mni_t1, sigma, np.random.default_rng(percent))
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.2)


@pytest.mark.parametrize("percent", [1, 3, 5, 9])
def test_sigma_within_20_percent_on_colin27(colin27, percent):
    sigma = percent / 100 * colin27.max()
    noisy = add_rician_noise(colin27, sigma, np.random.default_rng(percent))
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.2)


@pytest.mark.parametrize("percent", [1, 9])
def test_a_large_volume_s_first_estimate_from_an_even_sample_gives_every_voxel_s_sigma(mni_t1, percent, monkeypatch):
    noisy = add_rician_noise(mni_t1, percent / 100 * mni_t1.max(), np.random.default_rng(percent))
    assert noisy.size > 4 * noise.SAMPLED_ABOVE  # sampled every other voxel along each axis
    sampled = estimate_sigma(noisy)
    monkeypatch.setattr(noise, "SAMPLED_ABOVE", noisy.size)
    assert sampled == pytest.approx(estimate_sigma(noisy), rel=1e-4)


def test_sigma_of_thick_slices(mni_t1):
    thick = mni_t1[: mni_t1.shape[0] // 5 * 5].reshape(-1, 5, *mni_t1.shape[1:]).mean(axis=1)
    sigma = 0.05 * thick.max()
    assert estimate_sigma(add_rician_noise(thick, sigma, np.random.default_rng(0))) == pytest.approx(sigma, rel=0.2)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigma_is_unbiased_in_pure_white_noise(seed):
    # A ramp has no Haar detail, so every tissue block is pure noise: this checks the block
    # percentile's correction (it was 4-5% low before the Haar details' correlation was counted).
    ramp = np.broadcast_to(np.linspace(100.0, 300.0, 60)[:, None, None], (60, 60, 60))
    noisy = add_rician_noise(ramp, 5.0, np.random.default_rng(seed))
    assert estimate_sigma(noisy) == pytest.approx(5.0, rel=0.035)


def _temporal_sigma(epi_pair) -> float:
    first, second = epi_pair
    return float((first - second)[head_mask(first)].std() / np.sqrt(2))


def test_sigma_of_real_epi_noise_within_20_percent(epi_pair):
    truth = _temporal_sigma(epi_pair)
    estimate = noise.estimate_noise(epi_pair[0])
    # Real 2 mm EPI carries anatomy in every frequency band (about 90% of the finest Haar detail
    # energy is common to both time points): the Haar estimate alone is 1.46x the temporal-difference
    # sigma (DIPY's estimator was 4x off on a similar scan); the fourth difference finds that
    # anatomy and takes sigma to 1.01x.
    assert estimate.haar_sigma > 1.35 * truth
    assert estimate.sigma == pytest.approx(truth, rel=0.2)


def test_a_series_gives_the_noise_where_one_volume_sees_texture_as_noise():
    series = textured_series()
    estimates = estimate_sigma_in_series(series, 2)
    assert estimates.alone > 1.25 * 6.0
    assert estimates.from_series == pytest.approx(6.0, rel=0.05)
    assert estimates.sigma == estimates.from_series
    assert estimate_sigma_from_series(series[:1], 0) is None


def test_a_series_whose_contrast_changes_falls_back_on_the_volume_alone():
    # diffusion-like: every volume differs in signal, so the differences hold far more than noise
    series = textured_series() * np.array([1.0, 0.6, 0.8, 0.5])[:, None, None, None]
    estimates = estimate_sigma_in_series(series, 0)
    assert estimates.from_series > estimates.alone and estimates.sigma == estimates.alone


def test_sigma_of_real_epi_noise_from_the_pair_within_10_percent(epi_pair):
    series = np.stack(epi_pair)
    assert estimate_sigma_from_series(series, 0) == pytest.approx(_temporal_sigma(epi_pair), rel=0.1)
    # measured: 8.39 against the differences' standard deviation 9.01 (a MAD ignores their outliers)


def test_the_fourth_difference_block_gain_is_what_white_noise_gives():
    # FOURTH_DIFFERENCE_GAIN was simulated on 20 draws of 190-cubed noise; four of 100-cubed
    # (about 17 000 blocks) hold it to about 1%.
    rng = np.random.default_rng(7)
    readings = []
    for _ in range(4):
        ramp = np.broadcast_to(np.linspace(100.0, 300.0, 100)[:, None, None], (100, 100, 100))
        noisy = add_rician_noise(ramp, 1.0, rng)
        readings.append(noise._fourth_difference_sigma(noisy, ramp, 50.0))
    assert np.mean(readings) == pytest.approx(1.0, abs=0.02)


def test_white_noise_at_1_mm_keeps_the_haar_estimate(colin27):
    sigma = 0.05 * colin27.max()
    noisy = add_rician_noise(colin27, sigma, np.random.default_rng(0))
    estimate = noise.estimate_noise(noisy)
    assert not estimate.lowered and estimate.sigma == estimate.finest == estimate.haar_sigma
    # the grouped step takes the noise for white, also where the true sigma is given
    assert estimate.correlation is None and noise.estimate_noise(noisy, known_sigma=sigma).correlation is None
    assert estimate.haar_sigma < 1.1 * estimate.fourth_sigma


def test_coarse_voxels_at_low_noise_lower_sigma_toward_the_truth(colin27):
    # Colin27's T2-like remap averaged to 4 x 4 x 8 mm, 0.5% noise: the finest detail is mostly
    # anatomy (benchmarks/coarse_low_noise.py: the Haar estimate 5.4 times the truth, the
    # fourth difference's 3.0, and the default 5.25 dB below the noisy input before this)
    coarse, spacing = remap_contrast(colin27, "T2"), (1.0, 1.0, 1.0)
    for axis, mm in enumerate((8, 4, 4)):
        coarse, spacing = thick_slices(coarse, spacing, axis, mm)
    truth = 0.005 * coarse.max()
    noisy = add_rician_noise(coarse, truth, np.random.default_rng(1))
    estimate = noise.estimate_noise(noisy)
    assert estimate.haar_sigma > 4 * truth
    assert truth < estimate.sigma < 0.65 * estimate.haar_sigma
    assert estimate.lowered and estimate.finest == estimate.haar_sigma
    # anatomy only adds to the finest detail: a known sigma below it never reads as low-passed noise
    assert estimate.correlation is None and noise.estimate_noise(noisy, known_sigma=truth).correlation is None


def in_plane_frequencies(shape) -> tuple[np.ndarray, np.ndarray]:
    """The FFT frequencies along NumPy's axes 1 and 2, shaped to broadcast to an in-plane grid."""
    return np.fft.fftfreq(shape[1])[:, None], np.fft.fftfreq(shape[2])[None, :]


def in_plane_windowed(clean: np.ndarray, sigma: float, window: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``clean`` with Rician noise of each voxel's ``sigma`` whose two channels were low-passed by
    ``window`` (weights over ``in_plane_frequencies``), as a scanner's k-space window makes it."""
    def channel() -> np.ndarray:
        windowed = np.real(np.fft.ifftn(np.fft.fftn(rng.normal(size=clean.shape)) * window))
        return sigma * windowed / windowed.std()

    return np.hypot(clean + channel(), channel()).astype(np.float32)


def taken_for_white(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """The default's pilot and grouped step on a 1 mm ``noisy``, the noise taken for white."""
    cpu = torch.device("cpu")
    pilot = pilot_step(noisy, sigma, local_mean_kernel((1.0, 1.0, 1.0)), cpu, print)
    return wiener_step(noisy, pilot, sigma, cpu, DEFAULT_SEARCH, lambda fraction: None, print)


def head_error(volume: np.ndarray, clean: np.ndarray) -> float:
    """RMS error of ``volume`` where ``clean`` is above a tenth of its maximum."""
    return float(np.sqrt(np.mean((volume - clean)[clean > 0.1 * clean.max()] ** 2)))


def test_noise_low_passed_by_a_k_space_window_is_read_whole(colin27):
    # A Fermi window (cut-off 0.4 cycles per voxel) along the in-plane axes of both noise channels,
    # as benchmarks/filtered_noise.py makes it: the Haar detail sees 0.73 of each voxel's sigma,
    # the fourth difference 0.40, and the detrended 8-cubed blocks 1.05, which the estimate takes.
    first, second = in_plane_frequencies(colin27.shape)
    truth = 0.05 * colin27.max()
    fermi = 1 / (1 + np.exp((np.abs(first) - 0.4) / 0.02)) / (1 + np.exp((np.abs(second) - 0.4) / 0.02))
    noisy = in_plane_windowed(colin27, truth, fermi, np.random.default_rng(0))
    estimate = noise.estimate_noise(noisy)
    assert estimate.haar_sigma < 0.8 * truth
    assert estimate.raised and estimate.sigma == pytest.approx(truth, rel=0.12)
    # The window's lag-1 correlation is 0.28 in-plane; none across the slices.
    np.testing.assert_allclose(estimate.correlation[:, 1], [0.0, 0.28, 0.28], atol=0.06)
    notes = DenoisePipeline().run(noisy, (1.0, 1.0, 1.0), bias_correction=False).notes
    assert any("noise looks low-passed between voxels" in note and "raised" in note and "correlates" in note
               for note in notes)


def test_the_grouped_step_told_how_low_passed_noise_correlates_keeps_less_of_it(colin27):
    # A Hann window along the in-plane axes of both noise channels (lag-1 correlation 2/3, lag 2
    # 1/6), 5% noise, on a 96 x 112 x 96 crop of Colin27: the same sigma and pilot, gains that
    # know how the noise spreads over a window's frequencies beat gains that take it for white.
    clean = np.ascontiguousarray(colin27[40:136, 50:162, 40:136])
    first, second = in_plane_frequencies(clean.shape)
    truth = 0.05 * colin27.max()
    hann = (0.5 + 0.5 * np.cos(2 * np.pi * first)) * (0.5 + 0.5 * np.cos(2 * np.pi * second))
    noisy = in_plane_windowed(clean, truth, hann, np.random.default_rng(0))
    before = noisy.copy()
    estimate = noise.estimate_noise(noisy)
    assert estimate.raised
    np.testing.assert_allclose(estimate.correlation[:, 1], [0.0, 0.667, 0.667], atol=0.08)  # measured 0.61
    # One lag per voxel of the step's windows, which spread it over their frequencies.
    assert estimate.correlation.shape == (3, dct_wiener.BLOCK)
    result = DenoisePipeline().run(noisy, (1.0, 1.0, 1.0), bias_correction=False)
    error_white = head_error(taken_for_white(noisy, result.sigma), clean)
    assert head_error(result.denoised, clean) < 0.93 * error_white  # measured: 7.12 against 7.96
    # Given the sigma, the step is told the correlation all the same, and the user hears so.
    given = DenoisePipeline().run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=truth)
    assert any(note.startswith("the image's noise looks low-passed") and "correlates" in note for note in given.notes)
    assert head_error(given.denoised, clean) < 0.93 * error_white  # measured: 6.87
    np.testing.assert_array_equal(noisy, before)


def test_a_known_sigma_tells_the_step_how_low_passed_noise_correlates(colin27):
    # A Fermi window of the in-plane radius (cut-off 0.3 cycles per voxel), 5% noise, on a crop of
    # Colin27's T2-like remap: the Haar detail sees a third of the sigma. Given the true sigma,
    # that shortfall says the noise is low-passed, and the step is told how it correlates.
    t2_like = remap_contrast(colin27, "T2", (1.0, 1.0, 1.0))
    clean = np.ascontiguousarray(t2_like[40:136, 50:162, 40:136])
    truth = 0.05 * float(t2_like.max())
    radial_fermi = 1 / (1 + np.exp((np.hypot(*in_plane_frequencies(clean.shape)) - 0.3) / 0.02))
    noisy = in_plane_windowed(clean, truth, radial_fermi, np.random.default_rng(0))
    known = noise.estimate_noise(noisy, known_sigma=truth)
    assert known.finest < 0.4 * truth
    assert np.all(known.correlation[1:, 1] > 0.55) and known.correlation[0, 1] < 0.2  # measured 0.63, 0.66; 0.15
    given = DenoisePipeline().run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=truth)
    error_white = head_error(taken_for_white(noisy, truth), clean)
    assert head_error(given.denoised, clean) < 0.95 * error_white  # measured: 7.38 against 8.15


def test_a_window_cutting_near_half_nyquist_is_estimated_on_the_grid_it_looks_sampled_on(colin27):
    # A Fermi window of the in-plane radius at 0.275 cycles per voxel, 5% noise: its cut looks like
    # 2x zero-filling along J and I (``zero_filling``), so sigma is estimated on every other voxel
    # along them. The noise is still low-passed there (the window's disc inside that grid's band):
    # its Haar detail reads 0.83 of each voxel's sigma, and the check raises it to 1.12. The whole
    # image's Haar detail over what half-band noise keeps of it read 0.73.
    truth = 0.05 * colin27.max()
    radial_fermi = 1 / (1 + np.exp((np.hypot(*in_plane_frequencies(colin27.shape)) - 0.275) / 0.02))
    noisy = in_plane_windowed(colin27, truth, radial_fermi, np.random.default_rng(0))
    estimate = noise.estimate_noise(noisy)
    assert estimate.zero_filled == (1, 2)
    assert estimate.finest < 0.9 * truth and estimate.raised
    assert estimate.sigma == pytest.approx(truth, rel=0.15)


@pytest.mark.parametrize("window", ["white", "hann"])
def test_detrended_blocks_read_each_voxel_s_sigma_whatever_the_window(window):
    # A Hann window along two axes leaves the finest detail 0.35-0.43 of each voxel's sigma; the
    # detrended 8-cubed blocks read 0.92 of it in pure noise (a block holds fewer independent
    # values of such noise, so its low percentile sits lower) and 1.00-1.11 on the brains of
    # filtered_noise.py (the flattest tissue's texture adds a little).
    rng = np.random.default_rng(3)
    shape = (96, 96, 96)
    channel = rng.normal(size=shape)
    if window == "hann":
        hann = 0.5 + 0.5 * np.cos(2 * np.pi * np.fft.fftfreq(shape[1]))
        channel = np.real(np.fft.ifftn(np.fft.fftn(channel) * hann[:, None] * hann))
        channel /= channel.std()
    ramp = np.broadcast_to(np.linspace(100.0, 300.0, shape[0])[:, None, None], shape)
    noisy = (ramp + 2.0 * channel).astype(np.float32)
    expected = 2.0 if window == "white" else 0.925 * 2.0
    assert noise._detrended_sigma(noise._detrended_blocks(noisy, ramp, 50.0, 8)) == pytest.approx(expected, rel=0.04)
    haar = noise.estimate_noise(noisy).finest
    assert haar == pytest.approx(2.0, rel=0.05) if window == "white" else haar < 0.5 * 2.0
