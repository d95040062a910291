"""--thorough: a Wiener filter of the input in sliding 4x4x4 DCT windows, steered by the network's output."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from conftest import phantom, write_volume
from test_slicer_scene import SlicerLikeScene, slicer

from MRIDenoiseLib import dct_wiener as dct_wiener_module
from MRIDenoiseLib import pipeline as pipeline_module
from MRIDenoiseLib.cli import main
from MRIDenoiseLib.dct_wiener import dct_basis, dct_wiener, rician_amplitude, rician_mean
from MRIDenoiseLib.inference import Cancelled
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.noise import add_rician_noise, estimate_sigma
from MRIDenoiseLib.pipeline import NETWORK_SHARE_THOROUGH, STAGE_DENOISE, DenoisePipeline, wiener_step
from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic
from MRIDenoiseLib.worker_process import InProcessRunner

SIGMA = 6.0


def dense_dct_wiener(noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, block: int, step: int) -> torch.Tensor:
    """The same filter written independently: 64 dense DCT filters as one strided convolution,
    the windows put back by its transpose (valid where every window lies inside the volume)."""
    basis = dct_basis(block)
    filters = torch.einsum("ai,bj,ck->abcijk", basis, basis, basis).reshape(block**3, 1, block, block, block)
    coefficients = F.conv3d(noisy[None, None], filters, stride=step)
    gain = F.conv3d(rician_mean(pilot, sigma)[None, None], filters, stride=step).square()
    gain = gain / (gain + sigma * sigma)
    weight = 1 / gain.square().sum(dim=1, keepdim=True).clamp(min=1e-3)
    total = F.conv_transpose3d(gain * coefficients * weight, filters, stride=step)
    weight_sum = F.conv_transpose3d(weight, torch.ones(1, 1, block, block, block), stride=step)
    return rician_amplitude((total / weight_sum)[0, 0], sigma)


@pytest.mark.parametrize("block, step", [(4, 1), (4, 2)])
def test_the_sliding_windows_match_a_dense_convolution(block, step):
    generator = torch.Generator().manual_seed(0)
    pilot = 10 * torch.rand(21, 18, 17, generator=generator) + 5
    noisy = (pilot + torch.randn(pilot.shape, generator=generator)).abs()
    ours = dct_wiener(noisy, pilot, 1.0, block, step)
    reference = dense_dct_wiener(noisy, pilot, 1.0, block, step)
    # Inside, where both cover every voxel with all its windows (the dense one starts its windows at 0).
    inner = tuple(slice(block, (n - block) // step * step) for n in pilot.shape)
    torch.testing.assert_close(ours[inner], reference[inner], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(ours[inner], noisy[inner], atol=0.1)


def test_the_window_step_must_divide_the_window():
    volume = torch.ones(8, 8, 8)
    with pytest.raises(ValueError, match="must divide"):
        dct_wiener(volume, volume, 1.0, block=4, step=3)


def test_the_rician_mapping_is_inverted_from_the_noise_floor_to_far_above():
    amplitude = torch.tensor([0.5, 1.0, 2.0, 5.0, 30.0, 59.0, 200.0], dtype=torch.float64)
    np.testing.assert_allclose(rician_amplitude(rician_mean(amplitude, 2.0), 2.0), amplitude, atol=2e-3)
    # Means at or below pure noise's (sqrt(pi / 2) sigma) are noise: amplitude 0.
    assert rician_amplitude(torch.tensor([0.0, 1.25]), 1.0).tolist() == [0.0, 0.0]


def test_with_a_perfect_pilot_it_removes_most_noise_and_keeps_edges():
    clean = torch.from_numpy(phantom((32, 36, 34), 1))
    noisy = torch.from_numpy(add_rician_noise(clean.numpy(), SIGMA, np.random.default_rng(1)))
    filtered = dct_wiener(noisy, clean, SIGMA)
    inside = torch.from_numpy(head_mask(clean.numpy()))

    def error(volume):
        return float((volume - clean)[inside].square().mean())

    assert error(filtered) < 0.4 * error(noisy)  # measured 0.28
    # The step of 30 from 'white matter' to the brightest core stays a step, not a ramp.
    profile = filtered[16, 18, :].numpy()
    assert clean[16, 18, 10] - clean[16, 18, 9] > 29 and profile[10] - profile[9] > 20  # measured 31


def test_thorough_brings_a_real_epi_volume_closer_to_its_repeat(epi_pair):
    """nibabel's two EPI volumes: the second one's noise is independent of the first's, so a
    method that removes noise and keeps anatomy brings the first closer to it."""
    first, second = (volume.astype(np.float32) for volume in epi_pair)
    inside = head_mask(first)
    pipeline = DenoisePipeline()

    def error(volume):
        return float(((volume - second)[inside] ** 2).mean())

    plain = pipeline.run(first, (2.0, 2.0, 2.2), bias_correction=False).denoised
    thorough = pipeline.run(first, (2.0, 2.0, 2.2), bias_correction=False, thorough=True).denoised
    # Measured: 0.994 of the raw volume's error without the Wiener step, 0.970 with it.
    assert error(thorough) < error(plain) - 0.01 * error(first)
    assert error(thorough) < 0.98 * error(first)


def test_progress_runs_through_the_wiener_step_and_cancel_stops_it(tiny_weights, monkeypatch):
    # 43 x 51 x 47 windows (the 40 x 48 x 44 phantom and a margin of 3): 6 chunks of up to 8 rows.
    monkeypatch.setattr(dct_wiener_module, "WINDOWS_PER_CHUNK", 8 * 51 * 47)
    noisy = add_rician_noise(phantom(), SIGMA, np.random.default_rng(4))
    pipeline = DenoisePipeline(weights=tiny_weights)
    reported = []
    pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, thorough=True,
                 progress=lambda stage, fraction: reported.append(fraction) if stage == STAGE_DENOISE else None)
    assert reported == sorted(reported) and reported[-1] == 1.0
    assert sum(NETWORK_SHARE_THOROUGH < fraction < 1.0 for fraction in reported) == 5

    def cancel_in_wiener_step():
        return bool(reported_now) and reported_now[-1] > NETWORK_SHARE_THOROUGH

    reported_now = []
    with pytest.raises(Cancelled):
        pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, thorough=True, cancel=cancel_in_wiener_step,
                     progress=lambda stage, fraction: reported_now.append(fraction) if stage == STAGE_DENOISE else None)


def test_a_gpu_out_of_memory_in_the_wiener_step_is_retried_on_the_cpu(monkeypatch):
    noisy = torch.from_numpy(add_rician_noise(phantom(), SIGMA, np.random.default_rng(7)).astype(np.float32))
    pilot = torch.from_numpy(phantom())
    devices, out_of_memory_on = [], {"meta"}  # "meta" stands in for a GPU here

    def dct_wiener_short_of_memory(volume, *args, **kwargs):
        devices.append(volume.device.type)
        if volume.device.type in out_of_memory_on:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return dct_wiener(volume, *args, **kwargs)

    monkeypatch.setattr(pipeline_module, "dct_wiener", dct_wiener_short_of_memory)
    notes = []
    filtered = wiener_step(noisy.numpy(), pilot.numpy(), SIGMA, torch.device("meta"), lambda fraction: None, notes.append)
    assert devices == ["meta", "cpu"] and len(notes) == 1 and "ran on the CPU" in notes[0]
    np.testing.assert_array_equal(filtered, dct_wiener(noisy, pilot, SIGMA).numpy())
    out_of_memory_on.add("cpu")  # on the CPU there is nowhere to go
    with pytest.raises(torch.OutOfMemoryError):
        wiener_step(noisy.numpy(), pilot.numpy(), SIGMA, torch.device("cpu"), lambda fraction: None, notes.append)


def test_an_image_with_negative_voxels_is_not_wiener_filtered_and_says_so(tiny_weights):
    noisy = add_rician_noise(phantom(), SIGMA, np.random.default_rng(6)).astype(np.float32) - 10
    pipeline = DenoisePipeline(weights=tiny_weights)
    plain = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA)
    thorough = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, sigma=SIGMA, thorough=True)
    np.testing.assert_array_equal(thorough.denoised, plain.denoised)
    assert plain.notes == [] and len(thorough.notes) == 1 and "negative voxels" in thorough.notes[0]


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
