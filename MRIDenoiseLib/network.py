"""The denoising network: a noise-level-conditioned residual UNet built from MONAI blocks.

The volume is first folded losslessly into 8 half-resolution channels (pixel unshuffle, as
FFDNet does in 2-D); a constant channel carries the noise level; a MONAI ``UNet`` works at half
resolution, where convolutions cost an eighth; the result is unfolded back and subtracted from
the input, so the network only has to predict the noise.

>>> import torch
>>> net = DenoiserNet()
>>> x = torch.rand(1, 1, 32, 32, 16)
>>> net(x, torch.tensor([0.05])).shape
torch.Size([1, 1, 32, 32, 16])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from monai.networks.nets import UNet
from monai.networks.utils import pixelshuffle, pixelunshuffle
from torch import nn

FOLD = 2


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters stored with the weights, so a checkpoint rebuilds its own network."""

    channels: tuple[int, ...] = (32, 64, 128)
    strides: tuple[int, ...] = (2, 2)
    num_res_units: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "NetworkConfig":
        return cls(
            channels=tuple(values["channels"]),
            strides=tuple(values["strides"]),
            num_res_units=int(values["num_res_units"]),
        )

    @property
    def size_multiple(self) -> int:
        """Every spatial size given to the network must be a multiple of this."""
        multiple = FOLD
        for stride in self.strides:
            multiple *= stride
        return multiple


class DenoiserNet(nn.Module):
    """Maps a normalised noisy volume and its normalised Rician sigma to a clean volume."""

    def __init__(self, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        folded = FOLD**3
        self.unet = UNet(
            spatial_dims=3,
            in_channels=folded + 1,
            out_channels=folded,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
            norm=None,
        )

    def forward(self, image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        folded = pixelunshuffle(image, spatial_dims=3, scale_factor=FOLD)
        sigma_map = sigma.to(folded).reshape(-1, 1, 1, 1, 1).expand(folded.shape[0], 1, *folded.shape[2:])
        noise = self.unet(torch.cat([folded, sigma_map], dim=1))
        return image - pixelshuffle(noise, spatial_dims=3, scale_factor=FOLD)
