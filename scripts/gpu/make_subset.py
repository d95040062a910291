"""Copy a training subset small enough to travel with the repository to a GPU machine that has no
network and no ../shared (about 55 MB with the defaults).

    python scripts/gpu/make_subset.py ../shared/data .devdata

Keeps every ``--every``-th IXI training scan, the IXI validation scans ``--validation`` names,
and the 1 mm scans; a scan finer than 1 mm is resampled to 1 mm by ``training.data.load_scan``'s
rule (``training_zoom``; it would be resampled so anyway) and stored as int16, so the subset stays
small. The split by
name (``training.data.is_validation``) is the same as on the full data.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from MRIDenoiseLib.training.data import is_validation, scan_paths, training_zoom

INT16_PEAK = 32000


def resample_to_1mm(source: Path, target: Path) -> None:
    image = nib.as_closest_canonical(nib.load(str(source)))
    zoom = training_zoom(image.header.get_zooms()[:3])
    volume = np.clip(ndimage.zoom(np.asarray(image.dataobj, dtype=np.float32), zoom, order=1), 0, None)
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] / zoom
    volume = (volume / volume.max() * INT16_PEAK).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, affine), str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--every", type=int, default=3, help="keep every n-th IXI training scan")
    parser.add_argument("--validation", nargs="*", default=["IXI080", "IXI130"], help="validation scans to keep, by prefix")
    args = parser.parse_args()
    ixi = [path for path in scan_paths(args.data_dir) if path.name.startswith("IXI")]
    kept = [path for path in ixi if not is_validation(path.name)][:: args.every]
    kept += [path for path in ixi if path.name.startswith(tuple(args.validation))]
    kept += [path for path in scan_paths(args.data_dir) if not path.name.startswith("IXI")]
    for path in kept:
        target = args.out_dir / path.relative_to(args.data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        if training_zoom(nib.load(str(path)).header.get_zooms()[:3]) is None:
            shutil.copy(path, target)
        else:
            resample_to_1mm(path, target)
    size = sum(p.stat().st_size for p in args.out_dir.rglob("*") if p.is_file())
    print(f"{len(kept)} scans, {size / 1e6:.0f} MB in {args.out_dir}")


if __name__ == "__main__":
    main()
