"""The default's grouped Wiener step (``block_matching``) in a form gradients pass through, for
training a network as its pilot (``mridenoise train --objective step``).

Given a perfect pilot the step clears the issue's bar on every case the default leaves short,
and most of what its own pilot costs is in the Wiener gains, which follow the pilot's share of
the noise (TRAINING_RUNS.md, "What the pilot is worth to the grouped step"). So the network is
trained on the step's output, not on its own: the loss reaches it through the gains P² / (P² +
σ²); the matches are fixed (chosen without gradients, as the library chooses them). Every group
of a patch is held at once (no threads, slabs or chunks), and the result stays the Rician mean
of the amplitude (the library's inverse is a table lookup), compared with the clean patch's.

>>> clean = torch.full((8, 8, 8), 10.0)
>>> noisy = clean + torch.randn(8, 8, 8, generator=torch.Generator().manual_seed(0))
>>> pilot = clean.clone().requires_grad_(True)
>>> mean = grouped_wiener_mean(noisy, pilot, 1.0)
>>> mean.sub(rician_mean(clean, 1.0)).square().mean().backward()
>>> bool(pilot.grad.abs().sum() > 0)
True
"""

from __future__ import annotations

import numpy as np
import torch

from ..block_matching import STEP, WindowGroups, reference_grid, replicate_padded
from ..dct_wiener import BLOCK, rician_mean
from ..inference import denoise_volume
from ..pipeline import DEFAULT_SEARCH, wiener_step

# What a network is trained and judged by: its own output, or the grouped step's with it as pilot.
OBJECTIVES = ("network", "step")


def grouped_wiener_mean(noisy: torch.Tensor, pilot: torch.Tensor, sigma: float, radius: int = DEFAULT_SEARCH[0],
                        matches: int = DEFAULT_SEARCH[1]) -> torch.Tensor:
    """``block_matching.block_matched_wiener(noisy, pilot, sigma, radius=radius, matches=matches)``
    before its last step (``rician_amplitude``), for one (D, H, W) patch; differentiable in
    ``pilot``. The same where the patch's first axis holds the most reference windows (the library
    puts that axis first, and windows that tie are then matched in another order)."""
    extra, corners = reference_grid(noisy.shape, BLOCK, STEP)
    groups = WindowGroups(replicate_padded(noisy, extra, radius), replicate_padded(rician_mean(pilot, sigma), extra, radius),
                          sigma, BLOCK, STEP, radius, min(matches, (2 * radius + 1) ** 3))
    with torch.no_grad():
        nearest = groups.nearest(corners)
    references = torch.stack(torch.meshgrid(*corners, indexing="ij"), -1).reshape(-1, 3) + radius
    window_corners = (references[None] + groups.offsets[nearest]) @ groups.strides
    voxels = window_corners.to(noisy.device)[..., None] + groups.in_window
    estimate, weight = groups.wiener(groups.transform(groups.noisy.reshape(-1)[voxels]),
                                     groups.transform(groups.expected.reshape(-1)[voxels]))
    per_voxel = weight[None, :, None].expand(voxels.shape)  # each window, its group's weight
    flat, size = voxels.reshape(-1), groups.noisy.numel()
    total = noisy.new_zeros(size).index_add(0, flat, (estimate * per_voxel).reshape(-1))
    weights = noisy.new_zeros(size).index_add(0, flat, per_voxel.reshape(-1))
    inside = tuple(slice(radius, radius + n) for n in noisy.shape)
    return (total / weights).reshape(groups.noisy.shape)[inside]


def through_grouped_step(noisy: torch.Tensor, pilot: torch.Tensor, clean: torch.Tensor,
                         sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(the step's output on each (B, 1, D, H, W) patch with ``pilot`` as its pilot, the clean
    patches' Rician means): the pair a training loss compares."""
    outputs, targets = [], []
    for patch, guess, truth, level in zip(noisy[:, 0], pilot[:, 0], clean[:, 0], sigma.reshape(-1).tolist()):
        outputs.append(grouped_wiener_mean(patch, guess, level))
        targets.append(rician_mean(truth, level))
    return torch.stack(outputs)[:, None], torch.stack(targets)[:, None]


def objective_output(network, image: np.ndarray, sigma: float, device: torch.device | str, objective: str) -> np.ndarray:
    """The output a validation scores: the network's on ``image``, or, for the "step" objective,
    the default's grouped step with the network's output as its pilot."""
    pilot = denoise_volume(image, sigma, network, device=device)
    if objective == "network":
        return pilot
    return wiener_step(image, pilot, sigma, torch.device(device), DEFAULT_SEARCH, lambda share: None, lambda note: None)
