"""The denoising network: smoothing chosen per voxel by SURE and a UNet, then non-local averaging.

Stage one does not paint the clean image. For every voxel it mixes the squared magnitude and
seven smoothed copies of it (isotropic at four scales, and within each axis plane for thick
slices), removes the Rician bias 2σ² as the classical unbiased estimator does
(sqrt(E[M²] - 2σ²)). A mixture of smoothed copies of the input cannot invent structure the
input lacks.

The mixing weights start from Stein's unbiased risk estimate (SURE): for a linear smoother f
with centre weight h0, (f(x) - x)² + σ²(2 h0 - 1) estimates, without the clean image, the error
f makes at a voxel; averaged over a window of about 6 voxels, the copies with lower estimated risk get
more weight. This needs no training and adapts to the scan actually being denoised. A UNet
(MONAI's, rebuilt in ``unet.py``), trained, adjusts those weights: it sees the volume folded losslessly into 8
half-resolution channels (pixel unshuffle, as FFDNet does in 2-D) plus a channel with the noise
level, so its convolutions cost an eighth of full-resolution ones; a small head on log(sigma)
adds a global preference.

Stage two (``nonlocal_means``) averages the stage-one estimate with a patch-based non-local
means of the input, and uses that as the guide of a final non-local average of the input: each
voxel is averaged with the neighbours within three voxels whose guide values match its own. On
held-out scans it adds 0.5 to 2.5 dB to stage one (BENCHMARKS.md); it is training-free, as the
output is still an average of input voxels. A small learned correction (gain near zero in the
bundled weights) is added last.

>>> import torch
>>> net = DenoiserNet()
>>> x = torch.rand(1, 1, 32, 32, 16)
>>> net(x, torch.tensor([0.05])).shape
torch.Size([1, 1, 32, 32, 16])
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .local_means import FLOOR as DETAIL_FLOOR
from .local_means import RAMP as DETAIL_RAMP
from .nonlocal_means import guided_means, patch_means
from .unet import UNet, pixel_shuffle, pixel_unshuffle

FOLD = 2
SIGMA_CHANNEL_GAIN = 10.0  # brings the normalised sigma (about 0.005-0.12) to the image's range
LOGIT_BOUND = 3.0  # the learned logit adjustment stays within +-3: it steers SURE, never overrides it wholesale
SURE_TEMPERATURE = 0.3  # in units of sigma²: lower picks the lowest-risk copy more sharply
# Share of its lost local mean given back to the stage-two guide (``with_local_detail``). With
# stage two's final average over the neighbours within three voxels (``WIDE_REACH``), all of it
# keeps the synthetic lesions' contrast as half of it did within two (at 1 mm; on 6 mm slices 6-13
# points more), and PSNR gains on 1 and 2 mm scans (TRAINING_RUNS.md, "A wider stage two"). With
# --preserve-detail, which gives back the output's, it would add noise twice: 0 there.
GUIDE_DETAIL = 1.0
# Squared radius (voxels²) of stage two's final average: 122 neighbours where the guide has its
# local mean back, 56 where it has not, as more neighbours from around a faint lesion then dim it
# (with --preserve-detail, 2 points on the worst lesions for 0.12 dB).
WIDE_REACH = 9
NARROW_REACH = 5


@dataclass(frozen=True)
class GuideDetail:
    """How much of its lost local mean the stage-two guide gets back, over which neighbourhood
    (voxels along z, y, x: ``local_means.local_mean_kernel``, not across thick slices), and so how
    far the final average it steers reaches.

    >>> GuideDetail().final_reach, GuideDetail(0.0).final_reach
    (9, 5)
    """

    share: float = GUIDE_DETAIL
    kernel: tuple[int, int, int] = (3, 3, 3)

    @property
    def final_reach(self) -> int:
        """Squared radius of the final average this guide steers (``WIDE_REACH`` or ``NARROW_REACH``)."""
        return WIDE_REACH if self.share > 0 else NARROW_REACH


@dataclass(frozen=True)
class NetworkConfig:
    """Hyper-parameters stored with the weights, so a checkpoint rebuilds its own network."""

    channels: tuple[int, ...] = (32, 64, 128)
    strides: tuple[int, ...] = (2, 2)
    num_res_units: int = 1
    # The UNet's full-resolution output shifts the stage-two guide instead of being added to the
    # result: the output stays an average of input voxels, and training can sharpen the guide.
    correction_in_guide: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "NetworkConfig":
        return cls(
            channels=tuple(values["channels"]),
            strides=tuple(values["strides"]),
            num_res_units=int(values["num_res_units"]),
            correction_in_guide=bool(values.get("correction_in_guide", False)),
        )

    @property
    def size_multiple(self) -> int:
        """Every spatial size given to the network must be a multiple of this."""
        multiple = FOLD
        for stride in self.strides:
            multiple *= stride
        # The coarse smoothed copies work at half resolution with 3-voxel means: at least 4 voxels.
        return max(multiple, 8)


def _mean3(volume: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of each voxel and its two neighbours along ``dim`` (two at the edges).

    Written into one output tensor (no concatenation): this runs dozens of times per volume.
    Inputs never carry gradients here (only the input image and its powers are smoothed).
    """
    length = volume.shape[dim]
    if length < 2:
        return volume
    out = torch.empty_like(volume)
    inner = out.narrow(dim, 1, length - 2)
    torch.add(volume.narrow(dim, 0, length - 2), volume.narrow(dim, 1, length - 2), out=inner)
    inner.add_(volume.narrow(dim, 2, length - 2)).div_(3)
    for edge, neighbour in ((0, 1), (length - 1, length - 2)):
        torch.add(volume.narrow(dim, edge, 1), volume.narrow(dim, neighbour, 1), out=out.narrow(dim, edge, 1)).div_(2)
    return out


def _box(volume: torch.Tensor, passes: int, kernel=(3, 3, 3)) -> torch.Tensor:
    """Repeated 3-voxel box means along the axes where ``kernel`` is 3 (separable, memory-bound)."""
    for _ in range(passes):
        for axis, width in enumerate(kernel):
            if width == 3:
                volume = _mean3(volume, 2 + axis)
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


@functools.lru_cache(maxsize=1)
def centre_weights() -> tuple[float, ...]:
    """Each smoothed copy's weight on the voxel itself (h0 in SURE), averaged over the 8
    positions a voxel can have within a 2x2x2 cell (the half-resolution copies depend on it)."""
    impulse = torch.zeros(1, 1, 16, 16, 16)
    weights = []
    for offset in itertools.product((8, 9), repeat=3):
        impulse.zero_()
        impulse[(0, 0, *offset)] = 1.0
        weights.append([float(copy[(0, 0, *offset)]) for copy in smoothed_copies(impulse)])
    return tuple(float(w) for w in torch.tensor(weights).mean(dim=0))


def sure_logits(image: torch.Tensor, smoothed: list[torch.Tensor], variance: torch.Tensor) -> torch.Tensor:
    """Mixing logits from the local SURE of the identity and of each smoothed copy.

    The per-voxel risks are averaged over a window of about 6 voxels, computed at half
    resolution (a 2x2x2 mean, then a 3-voxel mean); the logits are returned at half resolution.
    """
    half = [variance.expand(image.shape[0], 1, *(n // 2 for n in image.shape[2:]))]
    for copy, centre in zip(smoothed, centre_weights()):
        risk = (copy - image) ** 2 + variance * (2 * centre - 1)
        half.append(_box(F.avg_pool3d(risk, 2), 1))
    risks = torch.cat(half, dim=1)
    return -(risks - risks.amin(dim=1, keepdim=True)) / (SURE_TEMPERATURE * variance)


def with_local_detail(guide: torch.Tensor, image: torch.Tensor, sigma: torch.Tensor, detail: GuideDetail) -> torch.Tensor:
    """The guide given back ``detail.share`` of the local mean of what it lost against the input.

    A small lesion of about one sigma is smoothed into its surroundings in both halves of the
    guide; the mean of image - guide over 27 voxels (9 in-plane on thick slices) holds that loss
    well above its own noise (about sigma/5), so with it the final average draws less from across
    the lesion's edge. Faded out in the dark as in ``local_means``, where the difference is the
    Rician bias. The output is still an average of input voxels. In training no gradient flows
    through the mean given back (``_box`` writes into tensors of its own, which autograd cannot
    follow); the guide's does.
    """
    if detail.share == 0:
        return guide
    bright = ((guide / sigma - DETAIL_FLOOR) / DETAIL_RAMP).clamp(0, 1)
    return guide + detail.share * bright * _box((image - guide).detach(), 1, detail.kernel)


def patch_means_guide(image: torch.Tensor, sigma: torch.Tensor, detail: GuideDetail) -> torch.Tensor:
    """Stage two's guide without stage one: the patch means of ``image`` (B, 1, D, H, W), given
    back ``detail``'s share of the local mean they lost (``with_local_detail``). What the default
    grouped Wiener step is matched on (TRAINING_RUNS.md, "The grouped step by default").

    >>> flat = torch.full((1, 1, 8, 8, 8), 4.0)
    >>> noisy = flat + 0.5 * torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> guide = patch_means_guide(noisy, torch.tensor(0.5), GuideDetail())
    >>> float((guide - flat).std()) < 0.4 * float((noisy - flat).std())  # 0.30
    True
    """
    sigma = sigma.to(image).reshape(-1, 1, 1, 1, 1)
    return with_local_detail(patch_means(image, (sigma * sigma).clamp(min=1e-10)), image, sigma, detail)


class DenoiserNet(nn.Module):
    """Maps a normalised noisy volume and its normalised Rician sigma to a clean volume."""

    def __init__(self, config: NetworkConfig = NetworkConfig()):
        super().__init__()
        self.config = config
        folded = FOLD**3
        self.bases = 1 + 4 + len(PLANES)  # the input and its smoothed copies
        self.unet = UNet(
            in_channels=folded + 1,
            out_channels=folded + self.bases,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
        )
        self.correction_gain = nn.Parameter(torch.zeros(1))
        # The UNet's logits start small, so the first steps mix all copies instead of locking
        # onto whichever one a random initialisation favoured.
        self.logit_gain = nn.Parameter(torch.full((1,), 0.05))
        # How much to smooth depends first of all on the noise level: a small head on log(sigma)
        # gives the global preference, the UNet the local, structure-dependent adjustment.
        self.noise_prior = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, self.bases))
        nn.init.zeros_(self.noise_prior[2].weight)
        nn.init.zeros_(self.noise_prior[2].bias)

    def forward(self, image: torch.Tensor, sigma: torch.Tensor, guide_detail: GuideDetail = GuideDetail()) -> torch.Tensor:
        """``guide_detail``: what of its lost local mean the stage-two guide gets back
        (``with_local_detail``); a share of 0 where the caller gives the output's back (``local_means``)."""
        sigma = sigma.to(image).reshape(-1, 1, 1, 1, 1)
        folded = pixel_unshuffle(image, FOLD)
        sigma_map = (SIGMA_CHANNEL_GAIN * sigma).expand(folded.shape[0], 1, *folded.shape[2:])
        features = self.unet(torch.cat([folded, sigma_map], dim=1))
        folded_count = folded.shape[1]
        correction = pixel_shuffle(features[:, :folded_count], FOLD)
        adjustment = features[:, folded_count:]
        prior = self.noise_prior(torch.log(sigma.reshape(-1, 1).clamp(min=1e-4))).reshape(-1, self.bases, 1, 1, 1)
        learned = LOGIT_BOUND * torch.tanh((self.logit_gain * adjustment + prior) / LOGIT_BOUND)
        variance = (sigma * sigma).clamp(min=1e-10)
        # Mixing weights are smooth: computed at half resolution, each interpolated to full
        # resolution only when its copy is added (one full-resolution weight at a time).
        weights = torch.softmax(sure_logits(image, smoothed_copies(image), variance) + learned, dim=1)
        squared = image * image
        second_moment = -2 * variance
        for index, copy in enumerate([squared, *smoothed_copies(squared)]):
            weight = F.interpolate(weights[:, index : index + 1], scale_factor=FOLD, mode="trilinear", align_corners=False)
            second_moment = second_moment + weight * copy
        first = torch.sqrt(torch.clamp(second_moment, min=1e-8))
        # Two estimates that err differently (smoothing chosen by SURE; patch similarity) average
        # into a guide cleaner than either, which then tells which neighbours to average.
        guide = with_local_detail(0.5 * (first + patch_means(image, variance)), image, sigma, guide_detail)
        if self.config.correction_in_guide:
            return guided_means(image, guide + self.correction_gain * correction, variance, guide_detail.final_reach)
        return guided_means(image, guide, variance, guide_detail.final_reach) + self.correction_gain * correction
