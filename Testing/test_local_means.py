"""--preserve-detail: what denoising took from each 3x3x3 neighbourhood's mean is given back."""

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from conftest import phantom, write_volume
from test_slicer_scene import SlicerLikeScene, slicer

from MRIDenoiseLib.cli import main
from MRIDenoiseLib.inference import denoise_volume
from MRIDenoiseLib.local_means import restore_local_means
from MRIDenoiseLib.model import DEFAULT_WEIGHTS, load_network
from MRIDenoiseLib.network import GUIDE_DETAIL, GuideDetail
from MRIDenoiseLib.noise import add_rician_noise, estimate_sigma
from MRIDenoiseLib.pipeline import DEFAULT_SEARCH, THOROUGH_SEARCH, DenoisePipeline, pilot_step, wiener_step
from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic
from MRIDenoiseLib.worker_process import InProcessRunner

SIGMA = 6.0


def lesioned_phantom():
    """The phantom with a faint (one sigma) bright sphere of radius 2 voxels in bright tissue."""
    clean = phantom((40, 48, 44), 0)
    centre = np.array([20, 24, 22])
    grid = np.indices(clean.shape)
    lesion = ((grid - centre[:, None, None, None]) ** 2).sum(axis=0) <= 4
    assert clean[lesion].min() > 4 * SIGMA
    clean[lesion] += SIGMA
    return clean, lesion


def test_a_dimmed_lesion_gets_its_contrast_back():
    clean, lesion = lesioned_phantom()
    # What a denoiser that blends the lesion with its surroundings leaves: 40% of its contrast.
    dimmed = clean - 0.6 * SIGMA * lesion
    restored = restore_local_means(clean, dimmed, SIGMA, (1.0, 1.0, 1.0))
    shell = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion, iterations=1)

    def contrast(volume):
        return volume[lesion].mean() - volume[shell].mean()

    # A lesion of radius 2 voxels is not much larger than the 3-voxel mean: about half of what it
    # lost comes back (the 3x3x3 mean spreads the rest of its edge's loss into the shell).
    assert contrast(dimmed) / contrast(clean) < 0.45
    assert contrast(restored) / contrast(clean) > 0.65


def test_it_costs_a_fifth_of_sigma_of_noise_and_leaves_dark_voxels_alone():
    clean = np.zeros((30, 30, 30), dtype=np.float32)
    clean[:, :, 15:] = 20 * SIGMA
    noisy = add_rician_noise(clean, SIGMA, np.random.default_rng(0))
    restored = restore_local_means(noisy, clean, SIGMA, (1.0, 1.0, 1.0))
    # Where the denoiser was perfect, what comes back is the noise's 27-voxel mean: sigma / sqrt(27).
    added = (restored - clean)[2:-2, 2:-2, 18:-2]
    assert abs(added.std() / SIGMA - 27**-0.5) < 0.03
    assert np.array_equal(restored[:, :, :15], clean[:, :, :15])


def test_thick_slices_are_not_averaged_across():
    # A residual that changes only from slice to slice (z, the first array axis) is given back
    # whole when slices are 5 mm apart, and smeared over three slices when they are 1 mm apart.
    noisy = np.full((9, 8, 8), 100.0, dtype=np.float32)
    noisy[4] += 12
    denoised = np.full_like(noisy, 100.0)
    thick = restore_local_means(noisy, denoised, 1.0, (5.0, 1.0, 1.0))
    assert np.allclose(thick, noisy)
    thin = restore_local_means(noisy, denoised, 1.0, (1.0, 1.0, 1.0))
    assert np.allclose(thin[3:6, 4, 4], 104.0)


def preserved_detail(noisy, sigma, weights, spacing_zyx):
    """What --preserve-detail gives: the network (its guide not given back its own local mean: with
    the output's, the noise would come back twice), the grouped step on it, the local means."""
    network_output = denoise_volume(noisy, sigma, load_network(weights), guide_detail=GuideDetail(0.0))
    cpu = torch.device("cpu")
    grouped = wiener_step(noisy, network_output, sigma, cpu, DEFAULT_SEARCH, lambda fraction: None, print)
    return restore_local_means(noisy, grouped, sigma, spacing_zyx)


def test_the_command_gives_back_the_local_means_of_its_own_result(tmp_path, tiny_weights):
    clean, _ = lesioned_phantom()
    source = write_volume(tmp_path / "in.nii.gz", add_rician_noise(clean, SIGMA, np.random.default_rng(2)))
    image = sitk.ReadImage(str(source))
    results = {}
    for name, extra in (("plain", []), ("detail", ["--preserve-detail"])):
        target = tmp_path / f"{name}.nii.gz"
        assert main(["denoise", str(source), str(target), "--no-n4", "--quiet", "--sigma", str(SIGMA),
                     "--weights", str(tiny_weights), *extra]) == 0
        results[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(target)))
    noisy = sitk.GetArrayFromImage(image)
    expected = preserved_detail(noisy, SIGMA, tiny_weights, tuple(reversed(image.GetSpacing())))
    assert not np.allclose(results["detail"], results["plain"], atol=0.1 * SIGMA)
    np.testing.assert_allclose(results["detail"], expected, atol=1e-3 * SIGMA)


def test_the_slicer_logic_passes_the_option_to_the_worker(tiny_weights, tmp_path):
    logic = MRIDenoiseLogic(runner=InProcessRunner(), temporaryRoot=str(tmp_path), weights=tiny_weights)
    clean, _ = lesioned_phantom()
    noisy = add_rician_noise(clean, SIGMA, np.random.default_rng(3)).astype(np.float32)
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy)
    results = {preserve: slicer.util.arrayFromVolume(logic.process(source, biasCorrection=False, preserveDetail=preserve))
               for preserve in (False, True)}
    expected = preserved_detail(noisy, estimate_sigma(noisy), tiny_weights, tuple(reversed(source.GetSpacing())))
    assert not np.allclose(expected, results[False], atol=1e-3 * SIGMA)
    np.testing.assert_allclose(results[True], expected, atol=1e-3 * SIGMA)


def test_a_magnitude_image_never_goes_below_zero():
    # A bright voxel among brighter ones, where the input is all dark: the 3x3x3 mean of what was
    # "lost" is far more negative than the voxel itself.
    noisy = np.zeros((5, 5, 5), dtype=np.float32)
    denoised = np.full_like(noisy, 10 * SIGMA)
    denoised[2, 2, 2] = 4 * SIGMA
    assert restore_local_means(noisy, denoised, SIGMA, (1.0, 1.0, 1.0)).min() == 0
    assert restore_local_means(noisy - 1, denoised, SIGMA, (1.0, 1.0, 1.0)).min() < 0


def test_the_guide_given_back_its_local_mean_dims_faint_lesions_less():
    """The network's own step (``network.with_local_detail``), with the bundled weights: four
    lesions of 1.2 sigma and radius 2.5 voxels in flat tissue, three noise draws, each denoised
    with and without the guide's local mean given back."""
    clean = np.full((48, 48, 48), 100.0, dtype=np.float32)
    grid = np.indices(clean.shape)
    inside, shell = np.zeros(clean.shape, bool), np.zeros(clean.shape, bool)
    for centre in ((14, 14, 14), (14, 34, 24), (34, 14, 34), (34, 34, 14)):
        distance = np.sqrt(((grid - np.array(centre)[:, None, None, None]) ** 2).sum(axis=0))
        clean[distance <= 2.5] += 1.2 * 5.0
        inside |= distance <= 2.0
        shell |= (distance >= 4) & (distance <= 6)
    weights = load_network(DEFAULT_WEIGHTS)

    def kept_and_error(noisy, detail):
        result = denoise_volume(noisy, 5.0, weights, guide_detail=GuideDetail(detail))
        kept = (result[inside].mean() - result[shell].mean()) / (clean[inside].mean() - clean[shell].mean())
        return kept, np.sqrt(((result - clean)[shell] ** 2).mean())

    for seed in range(3):
        noisy = add_rician_noise(clean, 5.0, np.random.default_rng(seed))
        (kept_without, error_without), (kept_with, error_with) = (kept_and_error(noisy, d) for d in (0.0, GUIDE_DETAIL))
        # Measured: 0.84 / 0.86 / 0.76 of the contrast without, 0.03 more with (and the wider
        # final average that comes with it, GuideDetail.final_reach); 5% less error around them.
        assert kept_with > kept_without + 0.015
        assert error_with < error_without


def test_the_guide_is_not_given_back_a_mean_across_thick_slices(tiny_weights):
    """As ``restore_local_means``: with 6 mm slices along z, the guide's local mean is taken
    in-plane, in the grouped step's pilot and in the network's guide (an image that is not a magnitude)."""
    noisy = add_rician_noise(phantom((16, 48, 44), 0), SIGMA, np.random.default_rng(4)).astype(np.float32)
    network, cpu = load_network(tiny_weights), torch.device("cpu")
    pipeline = DenoisePipeline(weights=tiny_weights)
    for thorough, search in ((False, DEFAULT_SEARCH), (True, THOROUGH_SEARCH)):
        result = pipeline.run(noisy, (1.0, 1.0, 6.0), bias_correction=False, sigma=SIGMA, thorough=thorough).denoised
        in_plane, across = (wiener_step(noisy, pilot_step(noisy, SIGMA, kernel, cpu, print), SIGMA, cpu, search,
                                        lambda fraction: None, print) for kernel in ((1, 3, 3), (3, 3, 3)))
        np.testing.assert_array_equal(result, in_plane)
        assert np.abs(result - across).max() > 1e-3 * SIGMA
    signed = noisy - 10
    result = pipeline.run(signed, (1.0, 1.0, 6.0), bias_correction=False, sigma=SIGMA).denoised
    in_plane, across = (denoise_volume(signed, SIGMA, network, guide_detail=GuideDetail(GUIDE_DETAIL, kernel))
                        for kernel in ((1, 3, 3), (3, 3, 3)))
    np.testing.assert_array_equal(result, in_plane)
    assert np.abs(result - across).max() > 1e-3 * SIGMA
