"""The CUDA path (autocast to half precision, the whole volume in one window) must give the CPU's
image: a GPU user gets the quality the benchmarks measure on the CPU. Skipped without a CUDA GPU,
so CI (which has none) never runs these; run them on a GPU machine with
``python -m pytest Testing/test_gpu.py Testing/test_real_noise.py Testing/test_inference.py``
(on a GPU, ``DenoisePipeline``'s default device is CUDA, so the real-noise tests run there too)."""

import numpy as np
import pytest
import torch

from MRIDenoiseLib.block_matching import block_matched_wiener
from MRIDenoiseLib.dct_wiener import BLOCK
from MRIDenoiseLib.inference import denoise_volume
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import psnr
from MRIDenoiseLib.model import DEFAULT_WEIGHTS, load_network
from MRIDenoiseLib.noise import add_rician_noise, estimate_sigma
from MRIDenoiseLib.pipeline import DenoisePipeline
from MRIDenoiseLib.zero_filling import zero_filled_correlation

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def network():
    return load_network(DEFAULT_WEIGHTS)


def test_gpu_and_cpu_give_the_same_psnr(epi_pair, network):
    # The real EPI volume as the reference, with 5% Rician noise added: a real head at 2 mm.
    reference = epi_pair[0]
    noisy = add_rician_noise(reference, 0.05 * float(reference.max()), np.random.default_rng(0))
    sigma, inside = estimate_sigma(noisy), head_mask(reference)
    on_cpu = denoise_volume(noisy, sigma, network, "cpu")
    on_gpu = denoise_volume(noisy, sigma, network, "cuda")
    # Measured on an H100: 26.05 dB noisy, 30.2882 on both devices; largest difference 5.2e-4 of the maximum.
    assert psnr(reference, on_cpu, inside) > psnr(reference, noisy, inside) + 3
    assert abs(psnr(reference, on_gpu, inside) - psnr(reference, on_cpu, inside)) < 0.005
    assert float(np.abs(on_gpu - on_cpu).max()) < 0.002 * float(reference.max())


def test_gpu_does_no_harm_on_real_noise_either(epi_pair, network):
    first, second = epi_pair
    inside, sigma = head_mask(first), estimate_sigma(first)

    def error(volume):
        return float(((volume - second)[inside] ** 2).mean())

    # Measured on an H100: 161.53 on both devices, 162.25 raw.
    on_cpu = error(denoise_volume(first, sigma, network, "cpu"))
    on_gpu = error(denoise_volume(first, sigma, network, "cuda"))
    assert on_gpu < error(first)
    assert on_gpu == pytest.approx(on_cpu, rel=1e-3)


def test_the_wiener_step_gives_the_cpus_result_on_the_gpu(epi_pair, network):
    """``--thorough`` runs its grouped Wiener step on CUDA, in larger chunks, when denoising did
    (not yet run on a GPU). Windows that tie in the pilot may be grouped in another order there,
    so the two are compared voxel by voxel in the median and by their distance to the repeat."""
    first, second = (torch.from_numpy(volume.astype(np.float32)) for volume in epi_pair)
    sigma = estimate_sigma(epi_pair[0])
    pilot = torch.from_numpy(denoise_volume(epi_pair[0], sigma, network, "cpu"))
    # white noise, and the gains of a zero-filled image's whole-image step
    for correlation in (None, zero_filled_correlation((1, 2), BLOCK)):
        on_cpu = block_matched_wiener(first, pilot, sigma, noise_correlation=correlation)
        on_gpu = block_matched_wiener(first.cuda(), pilot.cuda(), sigma, noise_correlation=correlation).cpu()
        assert float((on_gpu - on_cpu).abs().median()) < 1e-4 * float(first.max())
        assert float((on_gpu - second).square().mean()) == pytest.approx(float((on_cpu - second).square().mean()), rel=1e-3)


def test_the_default_gives_the_cpus_result_on_the_gpu(epi_pair):
    """The default's patch-means pilot and grouped step on CUDA (not yet run on a GPU), compared
    as the grouped step above."""
    first, second = (volume.astype(np.float32) for volume in epi_pair)
    pipeline = DenoisePipeline()
    on_cpu = pipeline.run(first, (2.0, 2.0, 2.2), bias_correction=False, device="cpu")
    on_gpu = pipeline.run(first, (2.0, 2.0, 2.2), bias_correction=False, device="cuda")
    assert on_gpu.device == "cuda" and on_gpu.notes == []
    assert float(np.median(np.abs(on_gpu.denoised - on_cpu.denoised))) < 1e-4 * float(first.max())
    assert float(np.square(on_gpu.denoised - second).mean()) == pytest.approx(
        float(np.square(on_cpu.denoised - second).mean()), rel=1e-3)
