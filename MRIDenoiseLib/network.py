"""The denoising network: a noise-level-conditioned UNet that predicts a per-voxel filter.

The network does not paint the clean image directly. It chooses, voxel by voxel, how to mix the
squared magnitude image smoothed at a few scales (a kernel-predicting network), removes the
Rician bias 2σ² as the classical unbiased estimator does (sqrt(E[M²] - 2σ²)), and adds a small
learned correction whose gain starts at zero. Training starts from a sensible smoother rather
than from a random image, which matters when training compute is two CPU cores; and a mixture
of smoothed copies of the input cannot invent structure that the input lacks.

The UNet (MONAI) sees the volume folded losslessly into 8 half-resolution channels (pixel
unshuffle, as FFDNet does in 2-D) plus a constant channel that carries the noise level, so its
convolutions cost an eighth of full-resolution ones.

>>> import torch
>>> net = DenoiserNet()
>>> x = torch.rand(1, 1, 32, 32, 16)
>>> net(x, torch.tensor([0.05])).shape
torch.Size([1, 1, 32, 32, 16])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from monai.networks.utils import pixelshuffle, pixelunshuffle
from torch import nn

FOLD = 2
SIGMA_CHANNEL_GAIN = 10.0  # brings the normalised sigma (about 0.005-0.12) to the image's range
LOGIT_BOUND = 3.0  # mixing logits stay within +-3, so the softmax never saturates and stops learning


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
        # The coarse smoothed copies work at half resolution with 3-voxel means: at least 4 voxels.
        return max(multiple, 8)


def _box(volume: torch.Tensor, passes: int, kernel=(3, 3, 3)) -> torch.Tensor:
    padding = tuple(k // 2 for k in kernel)
    for _ in range(passes):
        volume = F.avg_pool3d(volume, kernel, stride=1, padding=padding, count_include_pad=False)
    return volume


PLANES = ((1, 3, 3), (3, 1, 3), (3, 3, 1))


def smoothed_copies(volume: torch.Tensor) -> list[torch.Tensor]:
    """The volume smoothed at four isotropic scales (about 0.8, 1.2, 1.8 and 3 voxels) and
    within each of the three axis planes (about 1.2 voxels, nothing across the plane).

    Repeated 3-voxel box means approximate Gaussians (each pass adds a variance of 2/3 voxel²);
    the two coarse scales are computed at half resolution and interpolated back, which costs an
    eighth as much. The planar copies serve thick-slice scans, where smoothing across slices
    would blur anatomy. Spatial sizes must be even.
    """
    fine = _box(volume, 1)
    half = F.avg_pool3d(volume, 2)
    copies = [fine, _box(fine, 1)]
    for passes in (1, 3):
        copies.append(F.interpolate(_box(half, passes), scale_factor=2, mode="trilinear", align_corners=False))
    copies.extend(_box(volume, 2, plane) for plane in PLANES)
    return copies


class DenoiserNet(nn.Module):
    """Maps a normalised noisy volume and its normalised Rician sigma to a clean volume."""

    def __init__(self, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        folded = FOLD**3
        self.bases = 1 + 4 + len(PLANES)  # the input and its smoothed copies
        self.unet = UNet(
            spatial_dims=3,
            in_channels=folded + 1,
            out_channels=folded * (self.bases + 1),
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
            norm=None,
        )
        self.correction_gain = nn.Parameter(torch.zeros(1))
        # The UNet's logits start small, so the first steps mix all copies instead of locking
        # onto whichever one a random initialisation favoured.
        self.logit_gain = nn.Parameter(torch.full((1,), 0.05))
        # How much to smooth depends first of all on the noise level: a small head on log(sigma)
        # gives the global preference, the UNet the local, structure-dependent adjustment.
        self.noise_prior = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, self.bases))

    def forward(self, image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = sigma.to(image).reshape(-1, 1, 1, 1, 1)
        folded = pixelunshuffle(image, spatial_dims=3, scale_factor=FOLD)
        sigma_map = (SIGMA_CHANNEL_GAIN * sigma).expand(folded.shape[0], 1, *folded.shape[2:])
        features = pixelshuffle(self.unet(torch.cat([folded, sigma_map], dim=1)), spatial_dims=3, scale_factor=FOLD)
        prior = self.noise_prior(torch.log(sigma.reshape(-1, 1).clamp(min=1e-4))).reshape(-1, self.bases, 1, 1, 1)
        logits = LOGIT_BOUND * torch.tanh((self.logit_gain * features[:, : self.bases] + prior) / LOGIT_BOUND)
        weights = torch.softmax(logits, dim=1)
        squared = image * image
        bases = torch.cat([squared, *smoothed_copies(squared)], dim=1)
        second_moment = (weights * bases).sum(dim=1, keepdim=True) - 2 * sigma * sigma
        magnitude = torch.sqrt(torch.clamp(second_moment, min=1e-8))
        return magnitude + self.correction_gain * features[:, self.bases :]
