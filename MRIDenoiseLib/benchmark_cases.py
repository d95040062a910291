"""Benchmark cases made from a clean T1 scan: other contrasts, thick slices, a bias field, lesions.

Everything here is a fixed, seeded function of the clean scan, applied to the clean scan before
the noise (noise comes last, as in a scanner). Arrays are in NumPy axis order and ``spacing`` is
the voxel size per NumPy axis, in mm.

- :func:`remap_contrast` turns a T1 scan into a T2-like or PD-like one by a piecewise-linear map
  of the T1 intensity whose nodes sit at the scan's own CSF, grey- and white-matter levels
  (:func:`tissue_levels`).
- :func:`thick_slices` averages slabs of consecutive slices (a 6 mm acquisition from a 1 mm one).
- :func:`bias_field` is a fixed smooth multiplicative field of +-20%.
- :func:`zero_filled_scan` is a scan sampled at half the resolution along some axes and
  reconstructed 2x by zero-filling its k-space, anatomy and noise alike (noise comes with it, as
  the interpolation low-passes both); :func:`cut_k_space` is that cut, where given filtered by
  a scanner's k-space window (:func:`hamming_window`, :func:`radial_fermi_window`).
  :func:`partial_fourier_scan` is one whose k-space was sampled 6/8 along an axis, the rest
  zero-filled: a cut on one side only, which must not be taken for the former.
- :func:`place_lesions` and :func:`insert_lesions` add small smooth-edged spheres, hypo- and
  hyper-intense, in white matter; :func:`contrast_retained` says how much of each lesion's
  contrast to its surroundings a result keeps, relative to the clean lesioned image.
  :func:`lesions_on_thick_slices` says where lesions inserted before :func:`thick_slices` lie on
  the thick grid, so that their contrast is measured there.

>>> import numpy as np
>>> image = np.full((40, 40, 40), 100.0, np.float32)
>>> lesion = Lesion(centre=(20, 20, 20), radius_mm=3.0, contrast=0.2)
>>> lesioned = insert_lesions(image, [lesion], (1.0, 1.0, 1.0))
>>> round(float(lesioned[20, 20, 20]), 1), round(float(lesioned[0, 0, 0]), 1)
(120.0, 100.0)
>>> round(float(contrast_retained(lesioned, lesioned, [lesion], (1.0, 1.0, 1.0))[0]), 3)
1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .mask import head_mask

CONTRASTS = ("T1", "T2", "PD")

# Piecewise-linear maps from T1 intensity to the other contrasts. The T1 nodes are
# 0, half the CSF level (air, bone and the dark fringe of the head), CSF, GM, WM and the scan's
# maximum (fat in the scalp); the values below are the new intensities at those nodes, as a
# fraction of the output peak. T2: CSF brightest, GM above WM, fat moderately bright, air and
# bone dark. PD: flat, CSF a little above GM, GM above WM by ~20%.
CONTRAST_VALUES = {
    "T1": None,
    "T2": (0.0, 0.15, 1.0, 0.55, 0.38, 0.6),
    "PD": (0.0, 0.3, 1.0, 0.85, 0.7, 0.85),
}
# Tissue levels are measured this far inside the head (mm), where the brain is, not the scalp.
BRAIN_DEPTH_MM = 15.0
# Lesions: centres at least this deep in the head, this far apart, in homogeneous white matter.
LESION_DEPTH_MM = 20.0
LESION_SEPARATION_MM = 16.0
LESION_EDGE_MM = 0.5
# The shell around a lesion where its surroundings are measured, in mm beyond its radius.
SHELL_MM = (1.5, 3.5)
BIAS_AMPLITUDE = 0.2


def _depth_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Distance in mm from each voxel of ``mask`` to the outside of it."""
    return ndimage.distance_transform_edt(mask, sampling=tuple(float(s) for s in spacing))


def tissue_levels(t1: np.ndarray, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> tuple[float, float, float]:
    """Mean T1 intensity of CSF, grey and white matter: 3-class k-means deep inside the head.

    >>> import numpy as np
    >>> t1 = np.zeros((60, 60, 60), np.float32); t1[5:55, 5:55, 5:55] = 110.0
    >>> t1[25:35, 20:40, 20:40] = 40.0; t1[20:40, 40:50, 20:40] = 80.0
    >>> [round(v) for v in tissue_levels(t1)]
    [40, 80, 110]
    """
    t1 = np.asarray(t1, dtype=np.float32)
    deep = _depth_mm(head_mask(t1), spacing) > BRAIN_DEPTH_MM
    values = t1[deep] if deep.sum() > 100 else t1[head_mask(t1)]
    centres = np.percentile(values, [10, 50, 90]).astype(np.float64)
    for _ in range(50):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        updated = np.array([values[labels == k].mean() if np.any(labels == k) else centres[k] for k in range(3)])
        if np.allclose(updated, centres):
            break
        centres = updated
    csf, gm, wm = (float(c) for c in np.sort(centres))
    return csf, gm, wm


def remap_contrast(t1: np.ndarray, contrast: str, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A T2-like or PD-like image from a clean T1 one (``"T1"`` returns a float32 copy).

    The map is piecewise linear in the T1 intensity, with nodes at 0, half the CSF level, the CSF,
    GM and WM levels of :func:`tissue_levels` and the scan's maximum, and the values of
    ``CONTRAST_VALUES[contrast]`` there, times the T1's maximum (so the scale stays the T1's).
    Because it only sees intensity, partial-volume voxels between tissue and air take the
    in-between values of the curve (a thin bright rim at the edge of the head in T2).

    >>> import numpy as np
    >>> t1 = np.zeros((60, 60, 60), np.float32); t1[5:55, 5:55, 5:55] = 110.0
    >>> t1[25:35, 20:40, 20:40] = 40.0; t1[20:40, 40:50, 20:40] = 80.0
    >>> t2 = remap_contrast(t1, "T2")
    >>> bool(t2[30, 30, 30] > t2[30, 45, 30] > t2[10, 10, 10])  # CSF > GM > WM
    True
    """
    t1 = np.asarray(t1, dtype=np.float32)
    if contrast not in CONTRAST_VALUES:
        raise ValueError(f"contrast must be one of {CONTRASTS}, not {contrast!r}")
    if CONTRAST_VALUES[contrast] is None:
        return t1.copy()
    csf, gm, wm = tissue_levels(t1, spacing)
    peak = float(t1.max())
    nodes = np.array([0.0, csf / 2, csf, gm, wm, max(peak, wm * 1.01)])
    values = np.array(CONTRAST_VALUES[contrast]) * peak
    return np.interp(t1, nodes, values).astype(np.float32)


def _slab_factor(spacing: Sequence[float], axis: int, thickness_mm: float) -> int:
    """How many slices along ``axis`` :func:`thick_slices` averages into one slab."""
    factor = round(thickness_mm / float(spacing[axis]))
    if factor < 1:
        raise ValueError(f"slices of {spacing[axis]} mm are already thicker than {thickness_mm} mm")
    return factor


def thick_slices(volume: np.ndarray, spacing: Sequence[float], axis: int,
                 thickness_mm: float = 6.0) -> tuple[np.ndarray, tuple[float, ...]]:
    """Average consecutive slices along ``axis`` into slabs ``thickness_mm`` thick.

    Returns the thick volume and its spacing; trailing slices that do not fill a slab are dropped.

    >>> import numpy as np
    >>> thick, spacing = thick_slices(np.arange(13.0).reshape(13, 1, 1) * np.ones((1, 2, 2)), (1, 1, 1), 0)
    >>> thick[:, 0, 0].tolist(), spacing
    ([2.5, 8.5], (6.0, 1.0, 1.0))
    """
    factor = _slab_factor(spacing, axis, thickness_mm)
    moved = np.moveaxis(np.asarray(volume, dtype=np.float32), axis, -1)
    keep = moved.shape[-1] // factor * factor
    slabs = moved[..., :keep].reshape(*moved.shape[:-1], -1, factor).mean(-1)
    new_spacing = [float(s) for s in spacing]
    new_spacing[axis] *= factor
    return np.ascontiguousarray(np.moveaxis(slabs, -1, axis)), tuple(new_spacing)


def block_average(volume: np.ndarray, spacing: Sequence[float], block: int) -> tuple[np.ndarray, tuple[float, ...]]:
    """Average over blocks of ``block`` voxels along every axis (:func:`thick_slices` on each):
    a coarser acquisition of the same head. Returns the volume and its spacing.

    >>> import numpy as np
    >>> coarse, spacing = block_average(np.arange(64.0).reshape(4, 4, 4), (1.0, 1.0, 1.0), 2)
    >>> coarse.shape, spacing, float(coarse[0, 0, 0])
    ((2, 2, 2), (2.0, 2.0, 2.0), 10.5)
    """
    spacing = tuple(float(s) for s in spacing)
    for axis in range(3) if block > 1 else ():
        volume, spacing = thick_slices(volume, spacing, axis, block * spacing[axis])
    return np.asarray(volume, dtype=np.float32), spacing


def bias_field(shape: Sequence[int], amplitude: float = BIAS_AMPLITUDE) -> np.ndarray:
    """A fixed smooth multiplicative field between ``1 - amplitude`` and ``1 + amplitude``.

    A sum of linear and quadratic terms in coordinates running from -1 to 1 across the volume
    (so the same shape of field on any grid), scaled to reach +-``amplitude`` exactly.

    >>> field = bias_field((20, 30, 40))
    >>> round(float(field.min()), 3), round(float(field.max()), 3)
    (0.8, 1.2)
    """
    u = np.meshgrid(*[np.linspace(-1.0, 1.0, int(n)) for n in shape], indexing="ij")
    g = 0.6 * u[0] - 0.4 * u[1] + 0.5 * u[2] + 0.4 * u[0] * u[1] - 0.3 * u[2] ** 2 + 0.3 * u[1] * u[2]
    g = (g - (g.max() + g.min()) / 2) / ((g.max() - g.min()) / 2)
    return (1.0 + amplitude * g).astype(np.float32)


@dataclass(frozen=True)
class Lesion:
    """A smooth-edged sphere: centre (voxel index), radius (mm), relative contrast (+ hyper, - hypo).

    On a grid made by averaging slices (:func:`lesions_on_thick_slices`), a voxel stands for
    several slices and the centre is not at a voxel's middle: ``offset_mm`` is where the centre
    lies from the middle of voxel ``centre``, and ``slab_half_mm`` how far the averaged slices'
    own centres reach either side of a voxel's middle, per axis (both 0 on the grid the lesion
    was placed on).
    """

    centre: tuple[int, int, int]
    radius_mm: float
    contrast: float
    offset_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    slab_half_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)


def _distance_mm(shape: Sequence[int], centre: Sequence[int], spacing: Sequence[float], reach_mm: float,
                 offset_mm: Sequence[float] = (0.0, 0.0, 0.0),
                 slab_half_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[tuple[slice, ...], np.ndarray]:
    """The box of voxels around ``centre`` reaching ``reach_mm`` and their distance (mm) to it.

    The point is ``offset_mm`` from the middle of voxel ``centre``; a voxel's distance is that of
    the nearest of the slice centres it averages, which lie up to ``slab_half_mm`` either side of
    its middle (a voxel's middle when both are 0).
    """
    box, axes = [], []
    for n, c, s, offset, slab_half in zip(shape, centre, spacing, offset_mm, slab_half_mm):
        half = int(np.ceil((reach_mm + abs(offset) + slab_half) / float(s)))
        low, high = max(0, int(c) - half), min(int(n), int(c) + half + 1)
        box.append(slice(low, high))
        axes.append(np.maximum(np.abs((np.arange(low, high) - int(c)) * float(s) - offset) - slab_half, 0.0))
    grids = np.meshgrid(*axes, indexing="ij")
    return tuple(box), np.sqrt(sum(g**2 for g in grids))


def lesion_profile(distance_mm: np.ndarray, radius_mm: float) -> np.ndarray:
    """1 inside, 0 outside, a smooth (tanh, ``LESION_EDGE_MM``) edge at ``radius_mm``."""
    return 0.5 * (1.0 - np.tanh((distance_mm - radius_mm) / LESION_EDGE_MM))


def place_lesions(t1: np.ndarray, spacing: Sequence[float], count: int = 12, seed: int = 0,
                  radius_mm: tuple[float, float] = (2.0, 4.0),
                  contrast: tuple[float, float] = (0.10, 0.30)) -> list[Lesion]:
    """Seeded lesion positions in homogeneous white matter of a clean T1 scan.

    Candidates are voxels at least ``LESION_DEPTH_MM`` inside the head mask whose local mean
    (a 7 mm box) lies nearer the white-matter level than the grey-matter one and whose local
    variation is low; they are drawn at random, at least ``LESION_SEPARATION_MM`` apart. Half the
    lesions are hypo-, half hyper-intense, with a radius and a contrast magnitude drawn uniformly
    from the given ranges.
    """
    t1 = np.asarray(t1, dtype=np.float32)
    rng = np.random.default_rng(seed)
    _, gm, wm = tissue_levels(t1, spacing)
    size = [max(3, round(7.0 / float(s)) | 1) for s in spacing]
    local_mean = ndimage.uniform_filter(t1, size)
    local_sd = np.sqrt(np.maximum(ndimage.uniform_filter(t1 * t1, size) - local_mean**2, 0))
    deep = _depth_mm(head_mask(t1), spacing) > LESION_DEPTH_MM
    white = (local_mean > (gm + wm) / 2) & (local_mean < wm + (wm - gm))
    homogeneous = local_sd < 0.1 * wm
    candidates = np.argwhere(deep & white & homogeneous)
    if len(candidates) == 0:
        raise ValueError("no homogeneous white matter deep enough in the head for lesions")
    order = rng.permutation(len(candidates))
    lesions: list[Lesion] = []
    chosen: list[np.ndarray] = []
    scale = np.array([float(s) for s in spacing])
    for index in order:
        point = candidates[index]
        if any(np.linalg.norm((point - other) * scale) < LESION_SEPARATION_MM for other in chosen):
            continue
        sign = 1.0 if len(lesions) % 2 == 0 else -1.0
        lesions.append(Lesion(centre=tuple(int(v) for v in point),
                              radius_mm=float(rng.uniform(*radius_mm)),
                              contrast=sign * float(rng.uniform(*contrast))))
        chosen.append(point)
        if len(lesions) == count:
            break
    return lesions


def lesion_footprint(shape: Sequence[int], lesion: Lesion, spacing: Sequence[float]) -> tuple[tuple[slice, ...], np.ndarray]:
    """The box around ``lesion`` and its :func:`lesion_profile` there (float32)."""
    box, distance = _distance_mm(shape, lesion.centre, spacing, lesion.radius_mm + 4 * LESION_EDGE_MM)
    return box, lesion_profile(distance, lesion.radius_mm).astype(np.float32)


def insert_lesions(volume: np.ndarray, lesions: Sequence[Lesion], spacing: Sequence[float]) -> np.ndarray:
    """Multiply ``volume`` by ``1 + contrast * profile`` around each lesion (float32 copy), on the
    grid the lesions were placed on."""
    out = np.array(volume, dtype=np.float32, copy=True)
    for lesion in lesions:
        box, profile = lesion_footprint(out.shape, lesion, spacing)
        out[box] *= 1.0 + lesion.contrast * profile
    return out


def lesions_on_thick_slices(lesions: Sequence[Lesion], spacing: Sequence[float], axis: int,
                            thickness_mm: float = 6.0) -> list[Lesion]:
    """Where ``lesions`` placed on a grid of ``spacing`` lie after :func:`thick_slices` of it.

    Along ``axis`` the centre becomes the slab holding the centre slice (index // slices per
    slab), ``offset_mm`` the centre slice's place from the slab's middle, and ``slab_half_mm``
    half the distance between the slab's first and last slice centres; radii stay in mm. So a
    thick voxel is as far from a lesion as the nearest of the slices averaged into it: the slab
    holding the centre counts as inside even when the lesion is thinner than the slab, and a voxel
    of the neighbouring slab counts as surroundings only if none of its slices reaches nearer.

    >>> thick = lesions_on_thick_slices([Lesion((13, 5, 6), 2.0, 0.2)], (1.0, 1.0, 1.0), 0)[0]
    >>> thick.centre, thick.offset_mm, thick.slab_half_mm
    ((2, 5, 6), (-1.5, 0.0, 0.0), (2.5, 0.0, 0.0))
    """
    factor = _slab_factor(spacing, axis, thickness_mm)
    slice_mm = float(spacing[axis])
    on_slabs = []
    for lesion in lesions:
        if lesion.offset_mm != (0.0, 0.0, 0.0) or lesion.slab_half_mm != (0.0, 0.0, 0.0):
            raise ValueError("lesions must be on the grid they were placed on")
        slab, place = divmod(int(lesion.centre[axis]), factor)
        centre, offset, slab_half = list(lesion.centre), [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
        centre[axis] = slab
        offset[axis] = (place - (factor - 1) / 2) * slice_mm
        slab_half[axis] = (factor - 1) / 2 * slice_mm
        on_slabs.append(Lesion(tuple(centre), lesion.radius_mm, lesion.contrast, tuple(offset), tuple(slab_half)))
    return on_slabs


def lesion_contrast(image: np.ndarray, lesion: Lesion, spacing: Sequence[float]) -> float:
    """Mean inside the lesion (within ``radius - 0.5 mm``, at least its centre voxel) minus the
    mean of the shell ``radius + SHELL_MM`` around it (distances as in :class:`Lesion`)."""
    box, distance = _distance_mm(image.shape, lesion.centre, spacing, lesion.radius_mm + SHELL_MM[1],
                                 lesion.offset_mm, lesion.slab_half_mm)
    patch = np.asarray(image[box], dtype=np.float64)
    core = distance <= max(lesion.radius_mm - 0.5, 0.0)
    shell = (distance >= lesion.radius_mm + SHELL_MM[0]) & (distance <= lesion.radius_mm + SHELL_MM[1])
    return float(patch[core].mean() - patch[shell].mean())


def contrast_retained(reference: np.ndarray, result: np.ndarray, lesions: Sequence[Lesion],
                      spacing: Sequence[float]) -> np.ndarray:
    """Per lesion: its contrast in ``result`` over its contrast in ``reference`` (1 = all kept)."""
    return np.array([lesion_contrast(result, lesion, spacing) / lesion_contrast(reference, lesion, spacing)
                     for lesion in lesions])


def _along(mask: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A 1-D ``mask`` over the frequencies of ``axis``, shaped to broadcast over ``ndim`` axes."""
    return mask.reshape([-1 if index == axis else 1 for index in range(ndim)])


def _complex_noise(rng: np.random.Generator, shape) -> np.ndarray:
    """Unit complex white noise: independent standard normal real and imaginary channels."""
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def cut_k_space(volume: np.ndarray, axes: Sequence[int] = (1, 2),
                window: Callable[[list[np.ndarray]], np.ndarray] | None = None, factor: float = 2) -> np.ndarray:
    """``volume`` with the outer half of its k-space along ``axes`` set to zero (complex; all but
    the inner 1 / ``factor`` of it, a reconstruction ``factor`` times finer than the sampling), and
    what is kept weighted by ``window`` where given: a function of the frequencies along
    ``axes`` (one array each, shaped to broadcast), as fractions of the kept band's edge (-1 to 1),
    as a scanner filters the k-space it sampled (Hamming, Fermi).

    >>> line = np.zeros((1, 1, 8)); line[..., 3] = 1.0
    >>> cut = cut_k_space(line, (2,)).real[0, 0]  # an impulse spread over its neighbours
    >>> round(float(cut[3]), 2), round(float(cut.sum()), 2), np.round(cut[2:5], 2).tolist()
    (0.5, 1.0, [0.3, 0.5, 0.3])
    >>> np.round(cut_k_space(line, (2,), hamming_window).real[0, 0, 2:5], 2).tolist()  # smoother
    [0.22, 0.27, 0.22]
    """
    spectrum = np.fft.fftn(volume)
    frequencies = []
    for axis in axes:
        n = volume.shape[axis]
        kept, half = np.zeros(n, bool), int(n / (2 * factor))
        kept[:half] = kept[-half:] = True
        spectrum *= _along(kept, axis, volume.ndim)
        frequencies.append(_along(np.fft.fftfreq(n) * 2 * factor, axis, volume.ndim))
    if window is not None:
        spectrum *= window(frequencies)
    return np.fft.ifftn(spectrum)


def hamming_window(frequencies: list[np.ndarray]) -> np.ndarray:
    """A Hamming window along each axis of the sampled band (``cut_k_space``'s ``window``).

    >>> np.round(hamming_window([np.array([0.0, 0.5, 1.0])]), 2).tolist()
    [1.0, 0.54, 0.08]
    """
    weights = np.float64(1.0)
    for frequency in frequencies:
        weights = weights * (0.54 + 0.46 * np.cos(np.pi * frequency))
    return weights


def radial_fermi_window(frequencies: list[np.ndarray]) -> np.ndarray:
    """A Fermi window of the radius over the sampled band (``cut_k_space``'s ``window``), at 0.9
    of its edge, width 0.04.

    >>> np.round(radial_fermi_window([np.array([0.0, 0.9]), np.array([0.0, 0.0])]), 2).tolist()
    [1.0, 0.5]
    """
    radius = np.sqrt(sum(frequency**2 for frequency in frequencies))
    return 1 / (1 + np.exp((radius - 0.9) / 0.04))


def zero_filled_scan(clean: np.ndarray, sigma: float, rng: np.random.Generator, axes: Sequence[int] = (1, 2),
                     window: Callable[[list[np.ndarray]], np.ndarray] | None = None,
                     factor: float = 2) -> tuple[np.ndarray, np.ndarray]:
    """(reference, noisy) float32 magnitudes of ``clean`` sampled at half the resolution along
    ``axes`` (1 / ``factor`` of it) and reconstructed 2x (``factor`` times) by zero-filling: the
    clean image and complex white noise both cut to the inner half of k-space there (and filtered
    by ``window``, ``cut_k_space``), the noise scaled to ``sigma`` per voxel and channel."""
    noise = cut_k_space(_complex_noise(rng, clean.shape), axes, window, factor)
    noise *= sigma / np.sqrt(np.mean(noise.real**2))
    band_limited = cut_k_space(clean, axes, window, factor).real
    return np.abs(band_limited).astype(np.float32), np.abs(band_limited + noise).astype(np.float32)


def partial_fourier_scan(clean: np.ndarray, sigma: float, rng: np.random.Generator,
                         axis: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(reference, noisy) float32 magnitudes of ``clean`` with complex white noise of ``sigma``
    per channel, reconstructed from 6/8 of its k-space along ``axis`` (the outer quarter on the
    negative side zero-filled, as a partial Fourier acquisition without homodyne or POCS)."""
    n = clean.shape[axis]
    kept = _along(np.fft.fftfreq(n) * n >= -n / 4, axis, clean.ndim)

    def reconstructed(volume):
        return np.abs(np.fft.ifft(np.fft.fft(volume, axis=axis) * kept, axis=axis)).astype(np.float32)

    return reconstructed(clean), reconstructed(clean + sigma * _complex_noise(rng, clean.shape))
