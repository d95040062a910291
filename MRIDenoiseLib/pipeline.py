"""The denoising pipeline, the one entry point for the command, the worker and the Slicer logic.

Order, on purpose: the noise sigma is estimated on the raw image and the raw image is denoised
first (a Wiener filter of it on groups of similar windows, ``block_matching``, matched on a
patch-means pilot; or the network, with ``preserve_detail``), because there the Rician noise is
uniform and sigma holds everywhere. N4 divides by
a smooth field, which would make the noise vary across the image; it is fitted afterwards, on the
denoised image (a cleaner fit), and divided out of it. The residual (input minus denoised) is
therefore pure removed noise in the input's units.

>>> import numpy as np
>>> from MRIDenoiseLib.network import DenoiserNet
>>> pipeline = DenoisePipeline(network=DenoiserNet())
>>> volume = np.random.default_rng(0).random((24, 24, 24)).astype(np.float32) * 100 + 50
>>> result = pipeline.run(volume, spacing=(1.0, 1.0, 1.0), bias_correction=False)
>>> result.denoised.shape, result.bias_field is None, sorted(result.seconds)
((24, 24, 24), True, ['denoising', 'noise estimate'])
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .bias import correct_bias
from .block_matching import block_matched_wiener
from .dct_wiener import BLOCK
from .inference import denoise_volume, raise_if_cancelled, resolve_device, retried_on_cpu
from .input_checks import N4_MIN_VOXELS, InputError, can_correct_bias
from .intensity import intensity_scale
from .local_means import local_mean_kernel, restore_local_means
from .network import GUIDE_DETAIL, GuideDetail, patch_means_guide
from .noise import NoiseEstimate, estimate_noise, estimate_sigma
from .noise_field import estimate_noise_field
from .zero_filling import sampled_grids, sampled_spacing, zero_filled_correlation

StageProgress = Callable[[str, float], None]

STAGE_NOISE = "noise estimate"
STAGE_DENOISE = "denoising"
STAGE_BIAS = "bias correction"
# The grouped Wiener step's search (``block_matched_wiener``): radius in voxels, windows per group.
DEFAULT_SEARCH = (2, 8)
THOROUGH_SEARCH = (3, 16)
# Share of the denoising progress before the grouped step: the patch-means guide's (about 0.6 s
# of a 1 mm brain on 2 cores, against 2 s for the step, 3 s with --thorough) or, with
# --preserve-detail, the network's (about 3 s).
PILOT_SHARE = 0.25
NETWORK_SHARE = 0.55


def pilot_step(volume: np.ndarray, sigma: float, kernel: tuple[int, int, int], device: torch.device,
               on_fallback: Callable[[str], None], scale: float | None = None) -> np.ndarray:
    """``patch_means_guide`` of ``volume`` (in the network's units: divided by its intensity scale,
    ``scale`` where the caller has it) on ``device``, the local mean given back over ``kernel``; on
    the CPU after a GPU out-of-memory error."""
    scale = scale or intensity_scale(volume)

    def on(where: torch.device) -> np.ndarray:
        with torch.inference_mode():
            image = torch.from_numpy(volume).to(where)[None, None] / scale
            guide = patch_means_guide(image, torch.tensor(sigma / scale, device=where), GuideDetail(GUIDE_DETAIL, kernel))
            return guide[0, 0].mul_(scale).cpu().numpy()

    return retried_on_cpu(on, device, on_fallback, "GPU out of memory in the pilot ({error}); it ran on the CPU")


def wiener_step(volume: np.ndarray, pilot: np.ndarray, sigma: float, device: torch.device, search: tuple[int, int],
                progress: Callable[[float], None], on_fallback: Callable[[str], None],
                noise_correlation: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """``block_matched_wiener`` of ``volume`` with ``pilot`` on ``device``, within ``search`` (radius,
    windows per group), its noise correlated along each axis as ``noise_correlation`` says (None:
    white); a GPU out-of-memory error is retried on the CPU (as the network's pass is), and
    ``on_fallback`` is told."""
    radius, matches = search

    def on(where: torch.device) -> np.ndarray:
        with torch.inference_mode():
            return block_matched_wiener(torch.from_numpy(volume).to(where), torch.from_numpy(pilot).to(where), sigma,
                                        radius=radius, matches=matches, progress=progress,
                                        noise_correlation=noise_correlation).cpu().numpy()

    return retried_on_cpu(on, device, on_fallback, "GPU out of memory in the grouped step ({error}); it ran on the CPU")


def after_share(progress: Callable[[float], None], done: float,
                cancel: Optional[Callable[[], bool]]) -> Callable[[float], None]:
    """A step's progress callback: ``progress`` told the share ``done`` before the step plus the
    rest times the step's own share; then Cancelled raised where ``cancel`` asks for it.

    >>> told = []
    >>> after_share(told.append, 0.25, None)(0.5); told
    [0.625]
    """
    def told(fraction: float) -> None:
        progress(done + (1 - done) * fraction)
        raise_if_cancelled(cancel)

    return told


def step_device(chosen: torch.device, fallbacks: list[str]) -> torch.device:
    """Where the grouped step runs: on ``chosen`` where it is a CUDA device and has not run out of
    memory (``fallbacks`` empty), else on the CPU. Not on MPS: its i0e and i1e (the Rician mean)
    came with torch 2.7, and the step is untested there."""
    return chosen if chosen.type == "cuda" and not fallbacks else resolve_device("cpu")


def varying_noise(volume: np.ndarray, magnitude: bool, estimate: NoiseEstimate, noise_map: bool,
                  notes: list[str]) -> np.ndarray | None:
    """The relative noise field of ``volume`` (``noise_field``; only of a ``magnitude`` image) where
    ``noise_map`` asks for it and the noise varies, else None; ``notes`` hears what was found."""
    found = None
    if estimate.blocks is not None and magnitude:
        found = estimate_noise_field(estimate.blocks, estimate.finest)
    if found is None or not found.varies:
        if noise_map and found is None:
            notes.append("no noise map was used: " + ("too little of the image is tissue well above the noise to "
                                                      "map it" if magnitude else "the image is not a magnitude image"))
        elif noise_map and found.follows_anatomy:
            notes.append("no noise map was used: the image's finest detail is mostly anatomy, not noise (the noise "
                         "is low against it), so a map of it would follow the anatomy")
        elif noise_map:
            notes.append("no noise map was used: the noise level looks uniform across the image (its 95th "
                         f"percentile {found.spread:.2f} times its 5th in the tissue)")
        return None
    low, high = found.percentiles
    level = f"from {low:.2f} to {high:.2f} times its median in the tissue (5th to 95th percentile)"
    if not noise_map:
        notes.append(f"the noise level seems to vary across the image, {level}: the noise map option "
                     "(--noise-map) may denoise it better")
        return None
    notes.append(f"denoised against a noise map: the noise level runs {level}")
    return found.on_grid(volume.shape)


LOW_PASSED = "the image's noise looks low-passed between voxels (a k-space window)"
SIGMA_ADVICE = "if you know the noise level, pass it (--sigma), or give the 4-D series (--volume)"
# An estimate that could not be checked is noted below this fraction of the robust maximum: noise
# above it fills the finest detail, whatever the anatomy adds (Colin27 averaged to 4 x 4 x 8 mm,
# checked, reads 1.4-1.8 times the truth at 2% of its maximum, less the higher the noise:
# ``benchmarks/coarse_low_noise.py``), and at high noise too few blocks of tissue are well above
# it for the check to run (some 2 mm IXI T1 scans at 9%).
UNCHECKED_NOTE_BELOW = 0.05


def correlation_note(correlation: np.ndarray) -> str:
    """What the user is told where the grouped step was told the noise's ``correlation`` (per
    NumPy axis and lag, ``noise.NoiseEstimate.correlation``).

    >>> correlation_note(np.array([[1, 0.01], [1, 0.5], [1, 0.6]]))
    'the denoising was told how it correlates between neighbouring voxels (0.60 along I, 0.50 along J, 0.01 along K)'
    """
    return ("the denoising was told how it correlates between neighbouring voxels ("
            + ", ".join(f"{correlation[axis, 1]:.2f} along {'KJI'[axis]}" for axis in (2, 1, 0)) + ")")


def checked_sigma_note(haar_sigma: float, sigma: float, scale: float, correlation: np.ndarray | None = None) -> str:
    """What the user is told where the noise estimate's check (``noise.checked_sigma``) moved
    sigma from the Haar detail's ``haar_sigma``: down where that detail held anatomy, up where
    the noise looked low-passed (and then its ``correlation``, where the grouped step was told
    it: ``correlation_note``); ``scale``: the image's robust maximum.

    >>> checked_sigma_note(3.0, 2.0, 100.0).split(": ")[1].split("; ")[0]
    'sigma was lowered to 2 (2.00% of the robust maximum) from 3 (3.00%), which that detail gives'
    >>> checked_sigma_note(2.0, 3.0, 100.0).split(": ")[0]
    "the image's noise looks low-passed between voxels (a k-space window), so its finest detail sees only part of it"
    """
    reason = ("the image's finest detail holds more than white noise (anatomy, as at coarse voxels and low noise)"
              if sigma < haar_sigma else LOW_PASSED + ", so its finest detail sees only part of it")
    told = "" if correlation is None else "; " + correlation_note(correlation)
    return (f"{reason}: sigma was {'lowered' if sigma < haar_sigma else 'raised'} to {sigma:.4g} "
            f"({100 * sigma / scale:.2f}% of the robust maximum) from {haar_sigma:.4g} ({100 * haar_sigma / scale:.2f}%), "
            f"which that detail gives{told}; {SIGMA_ADVICE}")


def unchecked_sigma_note(sigma: float, scale: float) -> str:
    """What the user is told where the noise estimate could not be checked against the anatomy
    (``noise.NoiseEstimate.fourth_sigma`` is None): on a volume thinner than the check's blocks,
    or with too few of them in tissue well above the noise, sigma is the finest detail's alone,
    which reads high where anatomy fills that detail (nibabel's 3-slice ``functional.nii``: 3.3
    times the series' sigma). Noted only below ``UNCHECKED_NOTE_BELOW``.

    >>> unchecked_sigma_note(2.0, 100.0).split(": ")[0]
    "sigma 2 (2.00% of the robust maximum) was read from the image's finest detail alone"
    """
    return (f"sigma {sigma:.4g} ({100 * sigma / scale:.2f}% of the robust maximum) was read from the image's finest "
            "detail alone: the image is too small or thin, or too little of it is tissue well above that noise, to "
            "check it against the anatomy, which fills that detail at coarse voxels and low noise and makes it read "
            f"high; {SIGMA_ADVICE}")


def whole_image_zero_filled(axes: tuple[int, ...], magnitude: bool) -> bool:
    """Whether an image zero-filled along ``axes`` gets the grouped step over the whole image
    after its sampled grids: a ``magnitude`` image zero-filled along one or two axes.

    >>> [whole_image_zero_filled(axes, True) for axes in ((), (2,), (1, 2), (0, 1, 2))], whole_image_zero_filled((1,), False)
    ([False, True, True, False], False)
    """
    return magnitude and 0 < len(axes) < 3


def zero_filled_note(axes: tuple[int, ...], estimated: bool, whole_image: bool) -> str:
    """What the user is told where the image looks zero-filled along ``axes`` (NumPy's), and
    sigma was ``estimated`` (else given), and the grids' result guided a ``whole_image`` step.

    >>> zero_filled_note((1, 2), True, True).split(", so")[0]
    'the image looks interpolated 2x by zero-filling k-space along its I and J axes'
    >>> zero_filled_note((0,), True, True).split(": ")[1].split(", and ")[0]
    'sigma was estimated on one of the grids it was sampled on (every other voxel along that axis)'
    >>> zero_filled_note((0,), False, True).split(": ")[1]
    'each of the 2 grids it was sampled on was denoised apart, then the whole image, guided by their result'
    >>> zero_filled_note((0,), False, False).split(": ")[1]
    'each of the 2 grids it was sampled on was denoised apart'
    """
    names = " and ".join("KJI"[axis] for axis in sorted(axes, reverse=True))
    grids = (f"each of the {2 ** len(axes)} grids it was sampled on was denoised apart"
             + (", then the whole image, guided by their result" if whole_image else ""))
    return (f"the image looks interpolated 2x by zero-filling k-space along its {names} ax{'es' if len(axes) > 1 else 'is'}, "
            "so its noise is correlated between neighbouring voxels: "
            + (f"sigma was estimated on one of the grids it was sampled on (every other voxel along "
               f"{'those axes' if len(axes) > 1 else 'that axis'}), and " + grids if estimated else grids))


@dataclass
class DenoiseResult:
    """Arrays in the input's z-y-x order and units."""

    denoised: np.ndarray
    residual: np.ndarray
    bias_field: Optional[np.ndarray]
    sigma: float
    sigma_percent: float
    device: str
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What the volume was divided by to make its noise uniform (``noise_map``); None: one sigma.
    relative_noise: Optional[np.ndarray] = None
    # NumPy axes along which the image looked zero-filled 2x (``zero_filling``).
    zero_filled: tuple[int, ...] = ()

    def noise_level(self) -> np.ndarray:
        """The noise sigma denoising assumed at each voxel, in the input's units."""
        if self.relative_noise is None:
            return np.full(self.denoised.shape, self.sigma, dtype=np.float32)
        return self.relative_noise * np.float32(self.sigma)


class DenoisePipeline:
    """Holds the network (loaded once, on first use) and runs the stages in order."""

    def __init__(self, network=None, weights: Path | str | None = None):
        self._network, self._weights = network, weights
        self.load_seconds = 0.0

    @property
    def network(self):
        if self._network is None:
            from .model import DEFAULT_WEIGHTS, load_network

            started = time.perf_counter()
            self._network = load_network(self._weights or DEFAULT_WEIGHTS)
            self.load_seconds = time.perf_counter() - started
        return self._network

    @classmethod
    def checked(cls, weights: Path | str | None = None, load: bool = False) -> "DenoisePipeline":
        """A pipeline whose network is loaded (and checksummed) now where a weights file is named,
        so that a damaged one fails before any work, in every mode (also where the network would
        not run); or where ``load``: the mode runs it."""
        pipeline = cls(weights=weights)
        if load or weights is not None:
            _ = pipeline.network
        return pipeline

    def run(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        bias_correction: bool = True,
        device: str | torch.device = "auto",
        sigma: float | None = None,
        progress: Optional[StageProgress] = None,
        cancel: Optional[Callable[[], bool]] = None,
        preserve_detail: bool = False,
        thorough: bool = False,
        noise_map: bool = False,
    ) -> DenoiseResult:
        """Denoise (and, unless told not to, bias-correct) one 3-D volume.

        ``spacing`` is (x, y, z) in mm; ``sigma`` overrides the automatic noise estimate.
        By default the input is Wiener-filtered on groups of similar 4x4x4 windows
        (``block_matching``, DEFAULT_SEARCH) matched on its patch means (``pilot_step``).
        ``preserve_detail`` matches the groups on the network's output instead and then gives back
        what denoising took from each 3x3x3 neighbourhood's mean (``local_means``): faint lesions
        keep more of their contrast, the output keeps a little noise. ``thorough`` searches wider
        for the groups (THOROUGH_SEARCH): a little higher PSNR for about twice the step's time. An
        image with negative voxels gets the network alone, with a note.
        Where the noise level varies across the image (``noise_field``), ``noise_map`` denoises it
        divided by the estimated field and multiplies the field back (``sigma`` is then the level of
        the image so divided); without it a note says so. Where the image looks interpolated 2x by
        zero-filling (``zero_filling``), each grid it was sampled on is denoised apart and their
        result guides the grouped step over the whole image, told how its noise is spread, with a note.
        Where the noise looks low-passed by a k-space window (``noise.NoiseEstimate.correlation``),
        the grouped step is told how it correlates between voxels, with a note, sigma given or not.
        """
        report = progress or (lambda stage, fraction: None)
        seconds: dict[str, float] = {}
        notes: list[str] = []
        volume = np.asarray(volume, dtype=np.float32)

        started = time.perf_counter()
        report(STAGE_NOISE, 0.0)
        scale = intensity_scale(volume)
        # The grouped step filters a magnitude image (through the Rician mean), and only a magnitude
        # image's noise is mapped; other images get the network's two stages alone.
        grouped = bool(volume.min() >= 0)
        # Also where sigma is given: the estimate tells zero-filled and low-passed noise.
        estimate = estimate_noise(volume, known_sigma=sigma)
        estimated = sigma is None
        relative_noise = varying_noise(volume, grouped, estimate, noise_map, notes) if estimated or noise_map else None
        uniform = volume if relative_noise is None else volume / relative_noise
        if estimated:
            # Where a field is divided out, sigma is the level of the image so made uniform.
            sigma = estimate.sigma if relative_noise is None else estimate_sigma(uniform)
            if not 0 < sigma < scale:
                raise InputError(f"the noise level could not be estimated (sigma {sigma:g}): the image is too small, "
                                 "too flat or free of noise")
        elif not 0 < sigma < scale:
            raise InputError(f"sigma {sigma:g} is not a noise level of this image: it must be above 0 and below "
                             f"its robust maximum ({scale:.4g})")
        # Where the noise looked low-passed, the grouped step is told its correlation between voxels.
        low_passed = estimate.correlation if relative_noise is None else None
        sigma_is_the_estimate = estimated and relative_noise is None
        if sigma_is_the_estimate and (estimate.lowered or estimate.raised):
            notes.append(checked_sigma_note(estimate.haar_sigma, sigma, scale, low_passed))
        elif sigma_is_the_estimate and estimate.fourth_sigma is None and sigma < UNCHECKED_NOTE_BELOW * scale:
            notes.append(unchecked_sigma_note(sigma, scale))
        elif low_passed is not None:
            notes.append(f"{LOW_PASSED}: {correlation_note(low_passed)}")
        zero_filled = estimate.zero_filled
        if zero_filled:
            notes.append(zero_filled_note(zero_filled, estimated, whole_image_zero_filled(zero_filled, grouped)))
        seconds[STAGE_NOISE] = time.perf_counter() - started
        report(STAGE_NOISE, 1.0)
        raise_if_cancelled(cancel)

        chosen = resolve_device(device)
        started = time.perf_counter()
        fallbacks: list[str] = []  # the GPU ran out of memory: the CPU finished the job
        search = THOROUGH_SEARCH if thorough else DEFAULT_SEARCH
        # A zero-filled image is denoised on each grid it was sampled on, where its noise is white
        # (or as low-passed as a scanner's k-space window left it there: ``low_passed``, read on a
        # grid). Where one or two axes are (in-plane interpolation), a magnitude image's grids then
        # guide the grouped step over the whole image, told how its noise is spread over a window's
        # frequencies (``zero_filling.zero_filled_correlation``). Along all three that step lost up to
        # 0.37 dB (a window of 4 voxels holds 2 samples along each axis): the grids stay apart.
        grids, grid_spacing = sampled_grids(zero_filled), sampled_spacing(spacing, zero_filled)
        whole_image_step = whole_image_zero_filled(zero_filled, grouped)
        grids_share = 0.5 if whole_image_step else 1.0

        def denoise_grid(number: int, grid: tuple[slice, slice, slice]) -> np.ndarray:
            return self._denoise_uniform(
                np.ascontiguousarray(uniform[grid]), sigma, grid_spacing, chosen, grouped,
                preserve_detail, search, scale if relative_noise is None else None, low_passed,
                lambda fraction: report(STAGE_DENOISE, grids_share * (number + fraction) / len(grids)), cancel, fallbacks)

        if len(grids) == 1:
            denoised = denoise_grid(0, grids[0])  # no copy of the volume where there is one grid
        else:
            denoised = np.empty_like(uniform)
            for number, grid in enumerate(grids):
                denoised[grid] = denoise_grid(number, grid)
        if whole_image_step:
            denoised = wiener_step(uniform, denoised, sigma, step_device(chosen, fallbacks), search,
                                   after_share(lambda fraction: report(STAGE_DENOISE, fraction), grids_share, cancel),
                                   fallbacks.append, noise_correlation=zero_filled_correlation(zero_filled, BLOCK, low_passed))
        # The local means given back over the voxels of the last step: each grid's where they stay apart.
        given_back, given_back_spacing = ([(slice(None),) * 3], spacing) if whole_image_step else (grids, grid_spacing)
        for grid in given_back if preserve_detail else ():
            denoised[grid] = restore_local_means(uniform[grid], denoised[grid], sigma, tuple(reversed(given_back_spacing)))
        if fallbacks:
            chosen = resolve_device("cpu")
        if not grouped:
            notes.append("the grouped Wiener step (a filter of the magnitude) was skipped: the image has negative "
                         "voxels, so it is not a magnitude image; the network denoised it")
        notes.extend(fallbacks)
        if relative_noise is not None:
            denoised *= relative_noise
        if not np.isfinite(denoised).all():
            raise InputError("denoising gave non-finite voxels; nothing was written")
        seconds[STAGE_DENOISE] = time.perf_counter() - started
        residual = volume - denoised

        bias_field = None
        if bias_correction and not can_correct_bias(volume.shape):
            notes.append(f"bias correction skipped: N4 needs at least {N4_MIN_VOXELS} voxels along every axis "
                         f"(this volume has {' x '.join(map(str, reversed(volume.shape)))})")
        elif bias_correction:
            raise_if_cancelled(cancel)
            started = time.perf_counter()
            report(STAGE_BIAS, 0.0)
            denoised, bias_field = correct_bias(denoised, spacing)
            seconds[STAGE_BIAS] = time.perf_counter() - started
            report(STAGE_BIAS, 1.0)
        return DenoiseResult(
            denoised=denoised, residual=residual, bias_field=bias_field, sigma=float(sigma),
            sigma_percent=100.0 * float(sigma) / scale, device=chosen.type,
            seconds=seconds, notes=notes, relative_noise=relative_noise, zero_filled=zero_filled,
        )

    def _denoise_uniform(self, uniform: np.ndarray, sigma: float, spacing: tuple[float, float, float],
                         chosen: torch.device, grouped: bool, preserve_detail: bool, search: tuple[int, int],
                         pilot_scale: float | None, noise_correlation: Optional[np.ndarray],
                         progress: Callable[[float], None], cancel: Optional[Callable[[], bool]],
                         fallbacks: list[str]) -> np.ndarray:
        """The denoising stage of ``run`` on an image whose noise is of one ``sigma``, white or
        correlated along each axis as ``noise_correlation`` says: the pilot (or, with
        ``preserve_detail``, the network), the grouped Wiener step within ``search``;
        ``fallbacks`` hears where the GPU ran out of memory."""
        kernel = local_mean_kernel(tuple(reversed(spacing)))
        # With --preserve-detail the network's output (its guide not given back the lost local
        # mean, which keeps faint lesions apart) is the grouped step's pilot.
        if grouped and not preserve_detail:
            progress(0.0)
            denoised = pilot_step(uniform, sigma, kernel, chosen, fallbacks.append, pilot_scale)
            first_share = PILOT_SHARE
        else:
            first_share = NETWORK_SHARE if grouped else 1.0
            denoised = denoise_volume(
                uniform, sigma, self.network, chosen,
                progress=lambda fraction: progress(first_share * fraction),
                cancel=cancel, on_fallback=fallbacks.append,
                guide_detail=GuideDetail(0.0 if preserve_detail else GUIDE_DETAIL, kernel),
            )
        if grouped:
            raise_if_cancelled(cancel)
            denoised = wiener_step(uniform, denoised, sigma, step_device(chosen, fallbacks), search,
                                   after_share(progress, first_share, cancel), fallbacks.append,
                                   noise_correlation)
        return denoised
