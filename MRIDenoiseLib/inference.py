"""Running the network over a whole volume: device choice, sliding window, AMP, fallback, cancel.

>>> import numpy as np, torch
>>> from MRIDenoiseLib.network import DenoiserNet
>>> torch.manual_seed(0) and None
>>> volume = np.random.default_rng(0).random((20, 24, 9)).astype(np.float32) * 100
>>> denoised = denoise_volume(volume, sigma=5.0, network=DenoiserNet(), device="cpu")
>>> denoised.shape, denoised.dtype
((20, 24, 9), dtype('float32'))
"""

from __future__ import annotations

import math
from typing import Callable, Optional, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from .intensity import intensity_scale
from .network import DenoiserNet, GuideDetail

T = TypeVar("T")

ProgressCallback = Callable[[float], None]
CancelCheck = Callable[[], bool]

DEFAULT_WINDOW = 256
DEFAULT_OVERLAP = 0.25
GPU_BYTES_PER_VOXEL = 110
GPU_MEMORY_SHARE = 0.6


class Cancelled(Exception):
    """Raised inside the sliding window when the caller asked to stop."""


def raise_if_cancelled(cancel: Optional[CancelCheck]) -> None:
    """Raise Cancelled where ``cancel`` is given and says the caller asked to stop."""
    if cancel is not None and cancel():
        raise Cancelled()


class DeviceUnavailable(ValueError):
    """The device asked for does not exist on this machine."""


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; other names are checked; a device
    already resolved is returned as it is.

    >>> resolve_device("cpu"), resolve_device(torch.device("cpu"))
    (device(type='cpu'), device(type='cpu'))
    """
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable("device 'mps' was asked for but Apple MPS is not available; use --device cpu or auto")
    if name not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailable(f"unknown device {name!r}: use auto, cpu, cuda or mps")
    return torch.device(name)


def window_size(shape: tuple[int, ...], multiple: int, largest: int = DEFAULT_WINDOW) -> tuple[int, ...]:
    """Per axis, the smaller of ``largest`` and the axis rounded up to ``multiple``.

    Thin axes (thick-slice scans, single slices) are padded only to the next multiple,
    not to a whole cubic window.

    >>> window_size((181, 217, 30), 8, 160)
    (160, 160, 32)
    """
    return tuple(min(largest, multiple * math.ceil(n / multiple)) for n in shape)


def fits_one_window(shape: tuple[int, ...], roi: tuple[int, ...]) -> bool:
    """Whether one window covers the whole volume.

    >>> fits_one_window((181, 217, 181), (184, 224, 184)), fits_one_window((300, 300, 100), (256, 256, 104))
    (True, False)
    """
    return all(r >= n for r, n in zip(roi, shape))


def window_count(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    """How many windows MONAI's sliding window will run for this shape."""
    if fits_one_window(shape, roi):
        return 1
    from monai.data.utils import dense_patch_slices

    interval = [max(int(r * (1 - overlap)), 1) if r < n else r for r, n in zip(roi, shape)]
    padded = [max(r, n) for r, n in zip(roi, shape)]
    return len(dense_patch_slices(padded, roi, interval))


class _WindowPredictor:
    """Calls the network on one batch of windows; reports progress and honours cancel."""

    def __init__(self, network, sigma, guide_detail, total, use_amp, progress, cancel):
        self.network, self.sigma, self.guide_detail, self.total, self.use_amp = network, sigma, guide_detail, total, use_amp
        self.progress, self.cancel, self.done = progress, cancel, 0

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        raise_if_cancelled(self.cancel)
        sigma = self.sigma.expand(windows.shape[0])
        with torch.autocast(device_type=windows.device.type, enabled=self.use_amp):
            output = self.network(windows, sigma, guide_detail=self.guide_detail)
        self.done += windows.shape[0]
        if self.progress is not None:
            self.progress(min(self.done / self.total, 1.0))
        return output.float()


def gpu_window(shape: tuple[int, ...], multiple: int, free_bytes: int) -> int:
    """The sliding-window side on a GPU: the whole volume (rounded up to ``multiple``) where it
    fits in the free memory with room to spare (a 512³ volume peaked at 10.8 GiB on an H100: about
    86 bytes per voxel), else DEFAULT_WINDOW.

    >>> gpu_window((181, 217, 181), 16, 80 * 1024**3), gpu_window((512, 512, 512), 16, 8 * 1024**3)
    (224, 256)
    """
    if math.prod(shape) * GPU_BYTES_PER_VOXEL <= GPU_MEMORY_SHARE * free_bytes:
        return multiple * math.ceil(max(shape) / multiple)
    return DEFAULT_WINDOW


def predict_one_window(image: torch.Tensor, roi: tuple[int, ...], predictor: Callable[[torch.Tensor], torch.Tensor]):
    """What MONAI's sliding window gives when one window covers the (B, C, D, H, W) image: the
    image zero-padded to ``roi`` (the odd voxel after), predicted, and cropped back.

    It skips importing MONAI and the blending buffers.
    """
    sizes = image.shape[2:]
    margins = [((r - n) // 2, r - n - (r - n) // 2) for r, n in zip(roi, sizes)]
    padded = F.pad(image, [m for pair in reversed(margins) for m in pair])
    output = predictor(padded)
    return output[(..., *(slice(before, before + n) for (before, _), n in zip(margins, sizes)))].contiguous()


def _run_on_device(volume, sigma, network, device, window, overlap, progress, cancel, guide_detail):
    # On a GPU the volume is copied there once, and everything after (scale, windows, blending)
    # stays there until the result comes back: the host's share was most of the time.
    on_gpu = device.type == "cuda"
    image = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    if on_gpu:
        image = image.to(device)
        if window is None:
            window = gpu_window(volume.shape, network.config.size_multiple, torch.cuda.mem_get_info(device)[0])
    scale = intensity_scale(image if on_gpu else volume)
    non_negative = bool(image.min() >= 0)
    image = (image / scale)[None, None]
    roi = window_size(volume.shape, network.config.size_multiple, window or DEFAULT_WINDOW)
    predictor = _WindowPredictor(
        network.to(device).eval(),
        torch.tensor([sigma / scale], dtype=torch.float32, device=device),
        guide_detail,
        window_count(volume.shape, roi, overlap),
        on_gpu,
        progress,
        cancel,
    )
    with torch.inference_mode():
        if fits_one_window(volume.shape, roi):
            result = predict_one_window(image, roi, predictor)
        else:
            from monai.inferers import SlidingWindowInferer

            inferer = SlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=overlap, mode="gaussian", sw_device=device,
                                           device=device if on_gpu else torch.device("cpu"))
            result = inferer(image, predictor)
        result = result[0, 0].mul_(scale)
        if non_negative:
            result.clamp_(min=0)
    return result.cpu().numpy()


def denoise_volume(
    volume: np.ndarray,
    sigma: float,
    network: DenoiserNet,
    device: str | torch.device = "auto",
    window: int | None = None,
    overlap: float = DEFAULT_OVERLAP,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelCheck] = None,
    on_fallback: Optional[Callable[[str], None]] = None,
    guide_detail: GuideDetail = GuideDetail(),
) -> np.ndarray:
    """Denoise a 3-D magnitude volume whose Rician sigma is ``sigma`` (in its own units).

    ``window`` is the largest sliding-window side; by default DEFAULT_WINDOW, except on a CUDA
    GPU with memory enough for the whole volume in one window. A CUDA out-of-memory error is
    retried on the CPU, and ``on_fallback`` is told why. ``guide_detail``: see ``DenoiserNet.forward``.
    """
    device = resolve_device(device)
    return retried_on_cpu(
        lambda where: _run_on_device(volume, sigma, network, where, window, overlap, progress, cancel, guide_detail),
        device, on_fallback, "GPU out of memory ({error}); running on the CPU")


def retried_on_cpu(run: Callable[[torch.device], T], device: torch.device, on_fallback: Optional[Callable[[str], None]],
                   note: str) -> T:
    """``run(device)``; after a GPU out-of-memory error, ``run`` on the CPU, and ``on_fallback``
    hears ``note`` with ``{error}`` the error's class name. On the CPU the error is raised.

    >>> retried_on_cpu(lambda where: where.type, torch.device("cpu"), print, "{error}")
    'cpu'
    """
    try:
        return run(device)
    except torch.OutOfMemoryError as error:
        if device.type == "cpu":
            raise
        torch.cuda.empty_cache()
        if on_fallback is not None:
            on_fallback(note.format(error=error.__class__.__name__))
        return run(torch.device("cpu"))
