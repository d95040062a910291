"""Degradations that follow the physics of a scan, as MONAI dictionary transforms.

A training sample starts as a clean T1 volume under ``"target"`` with its head mask under
``"mask"``. The transforms change its contrast (so T2, PD and FLAIR are learned from T1 only),
multiply a smooth bias field, average thick slices, then add Rician noise into ``"image"`` and
record its sigma under ``"sigma"``. Noise comes last, as in a scanner: it is added to the
acquired (thick, biased) signal.

>>> import numpy as np
>>> sample = {"target": np.ones((1, 8, 8, 8), np.float32), "mask": np.ones((1, 8, 8, 8), bool),
...           "spacing": (1.0, 1.0, 1.0)}
>>> noisy = RandRicianNoised(sigma_range=(0.05, 0.05))(sample)
>>> round(float(noisy["sigma"]), 4), noisy["image"].shape
(0.05, (1, 8, 8, 8))
"""

from __future__ import annotations

import numpy as np
from monai.transforms import MapTransform, RandomizableTransform, Transform

from ..benchmark_cases import Lesion, insert_lesions, lesion_footprint
from ..intensity import intensity_scale
from ..noise import add_rician_noise

CONTRAST_NODES = 6
MAX_CONTRAST_SLOPE = 2.5


class RandContrastRemapd(RandomizableTransform, MapTransform):
    """Remap intensities with a random piecewise-linear curve (monotone or not) and a gamma.

    A non-monotone curve swaps the order of tissues: CSF bright and white matter dark is T2-like,
    flat grey/white contrast is PD-like. The background (zero) stays zero, and the slope is
    bounded so the target's own faint noise is not amplified into something to keep.
    """

    def __init__(self, keys=("target",), prob: float = 0.7):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)

    def __call__(self, data):
        self.randomize(None)
        if not self._do_transform:
            return data
        nodes = np.linspace(0.0, 1.0, CONTRAST_NODES)
        step = MAX_CONTRAST_SLOPE * (nodes[1] - nodes[0])
        values = [0.0]
        for _ in range(CONTRAST_NODES - 1):
            values.append(float(np.clip(values[-1] + self.R.uniform(-step, step), 0.05, 1.0)))
        if self.R.uniform() < 0.3:
            values = [0.0] + sorted(values[1:])
        gamma = float(np.exp(self.R.normal(0.0, 0.25)))
        out = dict(data)
        for key in self.key_iterator(out):
            image = np.asarray(out[key], dtype=np.float32)
            peak = float(image.max()) or 1.0
            remapped = np.interp(np.clip(image / peak, 0, 1), nodes, values) ** gamma
            out[key] = (remapped / max(remapped.max(), 1e-6)).astype(np.float32)
        return out


class RandLesionsd(RandomizableTransform, MapTransform):
    """Insert small smooth-edged spheres, hypo- and hyper-intense, into the tissue of ``target``,
    and write ``"weight"``: 1 everywhere plus ``lesion_weight`` inside each lesion, so the loss
    sees what dimming a small lesion costs a reader, not only its few voxels' share of the error.

    ``fraction`` is the expected share of the tissue's volume the lesions take up.
    """

    def __init__(self, keys=("target",), prob: float = 0.5, fraction: float = 0.003, radius_mm=(1.0, 4.0),
                 contrast=(0.05, 0.35), lesion_weight: float = 30.0):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.fraction, self.radius_mm, self.contrast, self.lesion_weight = fraction, radius_mm, contrast, lesion_weight

    def __call__(self, data):
        self.randomize(None)
        out = dict(data)
        target = np.asarray(data["target"], dtype=np.float32)
        weight = np.ones_like(target)
        if self._do_transform:
            spacing = data["spacing"]
            tissue = np.argwhere((np.asarray(data["mask"])[0] > 0.5) & (target[0] > 0.1 * target.max()))
            mean_volume = 4 / 3 * np.pi * np.mean(self.radius_mm) ** 3
            count = self.R.poisson(self.fraction * len(tissue) * float(np.prod(spacing)) / mean_volume) if len(tissue) else 0
            lesions = [Lesion(centre=tuple(int(v) for v in tissue[self.R.randint(len(tissue))]),
                              radius_mm=float(self.R.uniform(*self.radius_mm)),
                              contrast=float(self.R.choice([-1.0, 1.0]) * self.R.uniform(*self.contrast)))
                       for _ in range(count)]
            for key in self.key_iterator(out):
                out[key] = insert_lesions(np.asarray(out[key])[0], lesions, spacing)[None]
            for lesion in lesions:
                box, profile = lesion_footprint(target.shape[1:], lesion, spacing)
                weight[0][box] += self.lesion_weight * profile
        out["weight"] = weight
        return out


class RandThickSlicesd(RandomizableTransform, MapTransform):
    """Average consecutive slices along a random axis into thick ones (3-7 mm by default)."""

    def __init__(self, keys=("target", "mask"), prob: float = 0.5, thickness_mm=(3.0, 7.0)):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.thickness_mm = thickness_mm

    def __call__(self, data):
        self.randomize(None)
        if not self._do_transform:
            return data
        axis = int(self.R.randint(3))
        spacing = list(data["spacing"])
        factor = int(round(self.R.uniform(*self.thickness_mm) / spacing[axis]))
        if factor < 2:
            return data
        out = dict(data)
        for key in self.key_iterator(out):
            volume = np.moveaxis(np.asarray(out[key]), axis + 1, -1)
            keep = volume.shape[-1] // factor * factor
            blocks = volume[..., :keep].reshape(*volume.shape[:-1], -1, factor).astype(np.float32).mean(-1)
            if key == "mask":
                blocks = blocks > 0.5
            out[key] = np.ascontiguousarray(np.moveaxis(blocks, -1, axis + 1))
        spacing[axis] *= factor
        out["spacing"] = tuple(spacing)
        return out


class RandRicianNoised(RandomizableTransform, MapTransform):
    """Put ``target`` plus Rician noise into ``image``.

    Sigma is log-uniform, a fraction of the target's robust maximum (the same 99.9th percentile
    that normalises the network's input), so the network sees noise levels in the range drawn.
    """

    def __init__(self, keys=("target",), sigma_range=(0.005, 0.12)):
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, 1.0)
        self.sigma_range = sigma_range

    def __call__(self, data):
        low, high = np.log(self.sigma_range[0]), np.log(self.sigma_range[1])
        fraction = float(np.exp(self.R.uniform(low, high)))
        target = np.asarray(data["target"], dtype=np.float32)
        sigma = fraction * intensity_scale(target)
        seed = int(self.R.randint(2**31))
        out = dict(data)
        out["image"] = add_rician_noise(target, sigma, np.random.default_rng(seed))
        out["sigma"] = np.float32(sigma)
        return out


class NormaliseIntensityd(Transform):
    """Divide image, target and sigma by the noisy image's robust maximum, as inference does."""

    def __call__(self, data):
        scale = intensity_scale(np.asarray(data["image"]))
        out = dict(data)
        out["image"] = (np.asarray(data["image"]) / scale).astype(np.float32)
        out["target"] = (np.asarray(data["target"]) / scale).astype(np.float32)
        out["sigma"] = np.float32(data["sigma"] / scale)
        return out
