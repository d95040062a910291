"""The scripts that prepare and run training on a GPU machine without network."""

import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from conftest import phantom, write_volume

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "gpu"


def test_subset_keeps_every_third_training_scan_the_named_validation_scans_and_resamples_fine_ones(tmp_path):
    data = tmp_path / "data"
    (data / "ixi").mkdir(parents=True)
    (data / "fine").mkdir()
    for number in range(1, 13):
        write_volume(data / "ixi" / f"IXI{number:03d}-HH-1_T1.nii.gz", phantom((12, 14, 10), number))
    write_volume(data / "fine" / "sub01_t1w_0.7mm.nii.gz", phantom((20, 20, 20), 0) * 3, spacing=(0.7, 0.7, 0.7))
    finished = subprocess.run([sys.executable, str(SCRIPTS / "make_subset.py"), str(data), str(tmp_path / "out"),
                               "--validation", "IXI010"], capture_output=True, text=True, check=True)
    kept = sorted(path.name for path in (tmp_path / "out" / "ixi").iterdir())
    training = [f"IXI{number:03d}-HH-1_T1.nii.gz" for number in range(1, 13) if number % 10]
    assert kept == sorted(training[::3] + ["IXI010-HH-1_T1.nii.gz"])
    fine = nib.load(str(tmp_path / "out" / "fine" / "sub01_t1w_0.7mm.nii.gz"))
    assert np.allclose(fine.header.get_zooms()[:3], 1.0, atol=0.02) and fine.shape == (14, 14, 14)
    assert fine.get_data_dtype() == np.int16 and int(np.asarray(fine.dataobj).max()) == 32000
    assert finished.stdout.startswith("6 scans")


def test_offline_training_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPTS / "train_offline.sh")], check=False).returncode == 0
