"""A Wiener filter of the input in sliding 4x4x4 DCT windows, steered by a pilot: BM3D's second
step without the grouping (the first form of --thorough, kept as benchmarks/headroom.py's
comparison), and the Rician mapping both Wiener steps use."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import phantom

from MRIDenoiseLib import dct_wiener as dct_wiener_module
from MRIDenoiseLib.dct_wiener import dct_basis, dct_wiener, rician_amplitude, rician_mean
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.noise import add_rician_noise

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


def test_chunks_of_windows_give_the_whole_volume_s_result(monkeypatch):
    clean = torch.from_numpy(phantom((20, 24, 22), 1))
    noisy = torch.from_numpy(add_rician_noise(clean.numpy(), SIGMA, np.random.default_rng(4)))
    whole = dct_wiener(noisy, clean, SIGMA)
    # 23 x 27 x 25 windows (a margin of 3): 6 chunks of up to 4 rows.
    monkeypatch.setattr(dct_wiener_module, "WINDOWS_PER_CHUNK", 4 * 27 * 25)
    shares = []
    # The same sums in another order: at most 1.5e-4 apart (near the noise floor, where the Rician
    # inverse is steep).
    torch.testing.assert_close(dct_wiener(noisy, clean, SIGMA, progress=shares.append), whole, atol=1e-3, rtol=0)
    assert len(shares) == 6 and shares[-1] == 1.0


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


def test_the_rician_mappings_give_the_same_voxels_a_chunk_at_a_time(monkeypatch):
    amplitude = torch.rand(9, 10, 11, generator=torch.Generator().manual_seed(0)) * 80  # up to 80 sigma: both branches
    whole_mean, whole_amplitude = rician_mean(amplitude, 1.0), rician_amplitude(amplitude, 1.0)
    monkeypatch.setattr(dct_wiener_module, "VOXELS_PER_MAPPING", 97)
    assert torch.equal(rician_mean(amplitude, 1.0), whole_mean)
    assert torch.equal(rician_amplitude(amplitude, 1.0), whole_amplitude)
