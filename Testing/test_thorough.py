"""The grouped Wiener step (``block_matching``) through the pipeline, the command and the Slicer
logic: by default matched on the patch-means guide, with --thorough on the network's output."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import phantom, write_volume
from test_slicer_scene import SlicerLikeScene, slicer

from MRIDenoiseLib import block_matching, model
from MRIDenoiseLib import pipeline as pipeline_module
from MRIDenoiseLib.block_matching import block_matched_wiener
from MRIDenoiseLib.cli import main
from MRIDenoiseLib.inference import Cancelled, denoise_volume
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.model import WeightsError
from MRIDenoiseLib.network import GUIDE_DETAIL, GuideDetail
from MRIDenoiseLib.noise import add_rician_noise, estimate_sigma
from MRIDenoiseLib.pipeline import (
    DEFAULT_SEARCH,
    NETWORK_SHARE,
    PILOT_SHARE,
    STAGE_DENOISE,
    THOROUGH_SEARCH,
    DenoisePipeline,
    pilot_step,
    wiener_step,
)
from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic
from MRIDenoiseLib.worker_process import InProcessRunner

SIGMA = 6.0


def test_the_grouped_step_brings_a_real_epi_volume_closer_to_its_repeat(epi_pair):
    """nibabel's two EPI volumes: the second one's noise is independent of the first's, so a
    method that removes noise and keeps anatomy brings the first closer to it."""
    first, second = (volume.astype(np.float32) for volume in epi_pair)
    inside = head_mask(first)
    pipeline = DenoisePipeline()

    def error(volume):
        return float(((volume - second)[inside] ** 2).mean())

    network_alone = denoise_volume(first, estimate_sigma(first), pipeline.network, "cpu")
    plain = pipeline.run(first, (2.0, 2.0, 2.2), bias_correction=False).denoised
    thorough = pipeline.run(first, (2.0, 2.0, 2.2), bias_correction=False, thorough=True).denoised
    # Measured, of the raw volume's error: 0.966 by default, 0.965 with --thorough (0.979 and 0.978
    # before the estimate's fourth-difference check lowered sigma from 13.2 to 9.1); the network's
    # two stages alone (the default before the grouped step) 0.994.
    assert max(error(plain), error(thorough)) < 0.975 * error(first)
    assert max(error(plain), error(thorough)) < error(network_alone) - 0.01 * error(first)


def test_the_grouped_step_filters_on_the_patch_means_guide_without_the_network(tmp_path, monkeypatch):
    noisy = add_rician_noise(phantom(), SIGMA, np.random.default_rng(8)).astype(np.float32)
    monkeypatch.setattr(model, "DEFAULT_WEIGHTS", tmp_path / "missing.pt")
    pipeline = DenoisePipeline()
    cpu = torch.device("cpu")
    pilot = pilot_step(noisy, SIGMA, (3, 3, 3), cpu, print)
    inside = head_mask(phantom())

    def error(volume):
        return float(((volume - phantom())[inside] ** 2).mean())

    for thorough, search in ((False, DEFAULT_SEARCH), (True, THOROUGH_SEARCH)):
        result = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA, thorough=thorough).denoised
        np.testing.assert_array_equal(result, wiener_step(noisy, pilot, SIGMA, cpu, search, lambda _: None, print))
        # Measured: the pilot 0.354 of the noisy input's error, the grouped step 0.947 of the
        # pilot's (0.335 of the input's), 0.943 (0.334) with --thorough.
        assert error(result) < 0.97 * error(pilot) and error(result) < 0.36 * error(noisy)
    with pytest.raises(WeightsError):  # --preserve-detail runs the network
        pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA, preserve_detail=True)


def test_progress_runs_through_the_wiener_step_and_cancel_stops_it(tiny_weights, monkeypatch):
    # 16 planes of 13 x 15 reference windows (the 40 x 48 x 44 phantom, its longest axis first,
    # 3 voxels apart): a chunk a plane, however the workers share out the planes.
    monkeypatch.setattr(block_matching, "REFERENCES_PER_CHUNK", 13 * 15)
    noisy = add_rician_noise(phantom(), SIGMA, np.random.default_rng(4))
    pipeline = DenoisePipeline(weights=tiny_weights)
    for preserve_detail, first_share in ((False, PILOT_SHARE), (True, NETWORK_SHARE)):
        reported = []
        pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, thorough=True, preserve_detail=preserve_detail,
                     progress=lambda stage, fraction: reported.append(fraction) if stage == STAGE_DENOISE else None)
        assert reported == sorted(reported) and reported[-1] == 1.0
        assert sum(first_share < fraction < 1.0 for fraction in reported) == 15

    def cancel_in_wiener_step():
        return bool(reported_now) and reported_now[-1] > PILOT_SHARE

    reported_now = []
    with pytest.raises(Cancelled):
        pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, thorough=True, cancel=cancel_in_wiener_step,
                     progress=lambda stage, fraction: reported_now.append(fraction) if stage == STAGE_DENOISE else None)


def test_a_gpu_out_of_memory_in_the_wiener_step_is_retried_on_the_cpu(monkeypatch):
    noisy = torch.from_numpy(add_rician_noise(phantom(), SIGMA, np.random.default_rng(7)).astype(np.float32))
    pilot = torch.from_numpy(phantom())
    devices, out_of_memory_on = [], {"meta"}  # "meta" stands in for a GPU here

    def grouped_step_short_of_memory(volume, *args, **kwargs):
        devices.append(volume.device.type)
        if volume.device.type in out_of_memory_on:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return block_matched_wiener(volume, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "block_matched_wiener", grouped_step_short_of_memory)
    notes = []
    filtered = wiener_step(noisy.numpy(), pilot.numpy(), SIGMA, torch.device("meta"), THOROUGH_SEARCH, lambda fraction: None,
                           notes.append)
    assert devices == ["meta", "cpu"] and len(notes) == 1 and "ran on the CPU" in notes[0]
    np.testing.assert_array_equal(filtered, block_matched_wiener(noisy, pilot, SIGMA).numpy())
    out_of_memory_on.add("cpu")  # on the CPU there is nowhere to go
    with pytest.raises(torch.OutOfMemoryError):
        wiener_step(noisy.numpy(), pilot.numpy(), SIGMA, torch.device("cpu"), THOROUGH_SEARCH, lambda fraction: None,
                    notes.append)


def test_an_image_with_negative_voxels_is_not_wiener_filtered_and_says_so(tiny_weights):
    noisy = add_rician_noise(phantom(), SIGMA, np.random.default_rng(6)).astype(np.float32) - 10
    pipeline = DenoisePipeline(weights=tiny_weights)
    plain = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA)
    thorough = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA, thorough=True)
    network_alone = denoise_volume(noisy, SIGMA, pipeline.network, "cpu", guide_detail=GuideDetail(GUIDE_DETAIL, (3, 3, 3)))
    np.testing.assert_array_equal(plain.denoised, network_alone)
    np.testing.assert_array_equal(thorough.denoised, plain.denoised)
    for result in (plain, thorough):
        assert len(result.notes) == 1 and "negative voxels" in result.notes[0]


def test_the_command_and_the_slicer_logic_pass_thorough_on(tmp_path, tiny_weights):
    noisy = add_rician_noise(phantom(), SIGMA, np.random.default_rng(5)).astype(np.float32)
    source = write_volume(tmp_path / "in.nii.gz", noisy)
    pipeline = DenoisePipeline(weights=tiny_weights)
    expected = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA, thorough=True).denoised
    plain = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA).denoised
    assert not np.allclose(expected, plain, atol=0.05 * SIGMA)
    target = tmp_path / "out.nii.gz"
    assert main(["denoise", str(source), str(target), "--no-n4", "--quiet", "--sigma", str(SIGMA),
                 "--weights", str(tiny_weights), "--thorough"]) == 0
    np.testing.assert_allclose(sitk.GetArrayFromImage(sitk.ReadImage(str(target))), expected, atol=1e-3 * SIGMA)

    logic = MRIDenoiseLogic(runner=InProcessRunner(), temporaryRoot=str(tmp_path), weights=tiny_weights)
    laid = SlicerLikeScene()
    node = laid.addVolume(noisy)
    output = logic.process(node, biasCorrection=False, thorough=True)
    expected = pipeline.run(noisy, node.GetSpacing(), bias_correction=False, sigma=estimate_sigma(noisy),
                            thorough=True).denoised
    np.testing.assert_allclose(slicer.util.arrayFromVolume(output), expected, atol=1e-3 * SIGMA)
