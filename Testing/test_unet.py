"""The UNet rebuilt in plain torch is MONAI's UNet: the same state dict, the same output."""

import pytest
import torch
from monai.networks.nets import UNet as MonaiUNet
from monai.networks.utils import pixelshuffle, pixelunshuffle

from conftest import TINY_NETWORK

from MRIDenoiseLib.model import load_network
from MRIDenoiseLib.network import DenoiserNet
from MRIDenoiseLib.unet import UNet, pixel_shuffle, pixel_unshuffle


def monai_twin(unet: UNet, in_channels: int, out_channels: int, config) -> MonaiUNet:
    twin = MonaiUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, channels=config.channels,
                     strides=config.strides, num_res_units=config.num_res_units, norm=None)
    twin.load_state_dict(unet.state_dict(), strict=True)
    return twin.eval()


@pytest.mark.parametrize("make_network", [load_network, lambda: DenoiserNet(TINY_NETWORK)], ids=["bundled", "tiny random"])
def test_same_keys_and_output_as_monai_unet(make_network):
    torch.manual_seed(0)
    network = make_network()
    unet = network.unet
    first = unet.model[0].conv.unit0.conv
    twin = monai_twin(unet, first.in_channels, unet.model[2][0].conv.out_channels, network.config)
    assert list(twin.state_dict()) == list(unet.state_dict())
    features = torch.rand(2, first.in_channels, 24, 16, 8) * 3 - 1
    with torch.no_grad():
        ours, theirs = unet(features), twin(features)
    assert ours.abs().mean() > 1e-3
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_pixel_folding_matches_monai():
    volume = torch.rand(2, 3, 6, 4, 10)
    folded = pixel_unshuffle(volume, 2)
    assert torch.equal(folded, pixelunshuffle(volume, spatial_dims=3, scale_factor=2))
    assert torch.equal(pixel_shuffle(folded, 2), pixelshuffle(folded, spatial_dims=3, scale_factor=2))
    assert torch.equal(pixel_shuffle(folded, 2), volume)


def test_odd_sizes_and_missing_residual_units_are_refused():
    with pytest.raises(ValueError, match="divisible by 2"):
        pixel_unshuffle(torch.zeros(1, 1, 4, 5, 4), 2)
    with pytest.raises(ValueError, match="num_res_units"):
        UNet(9, 16, (16, 32), (2,), num_res_units=0)
