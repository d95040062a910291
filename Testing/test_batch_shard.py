"""``mridenoise denoise LIST OUT --shard INDEX/COUNT``: the tasks of a job array split a batch."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import REPO, phantom, write_volume

from MRIDenoiseLib.cli import main

ARRAY_SBATCH = REPO / "scripts" / "slurm" / "denoise_array.sbatch"
NAMES = ["e.nii.gz", "b.nii.gz", "d.nii.gz", "a.nii.gz", "c.nii.gz"]


def shard_run(listing, out, spec, tiny_weights) -> int:
    return main(["denoise", str(listing), str(out), f"--shard={spec}", "--no-n4", "--weights", str(tiny_weights),
                 "--quiet"])


@pytest.fixture
def listing(tmp_path):
    """Five small scans, listed out of order."""
    for seed, name in enumerate(NAMES):
        write_volume(tmp_path / name, phantom((16, 20, 18), seed) + 5.0)
    path = tmp_path / "scans.txt"
    path.write_text("\n".join(NAMES) + "\n")
    return path


def test_shards_cover_the_sorted_list_once(tmp_path, listing, tiny_weights):
    outputs = {}
    for index in range(3):
        out = tmp_path / f"out{index}"
        assert shard_run(listing, out, f"{index}/3", tiny_weights) == 0
        outputs[index] = sorted(p.name for p in out.iterdir())
    assert outputs == {0: ["a.nii.gz", "d.nii.gz"], 1: ["b.nii.gz", "e.nii.gz"], 2: ["c.nii.gz"]}
    denoised = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out1" / "e.nii.gz")))
    assert denoised.shape == (16, 20, 18) and np.isfinite(denoised).all()


def test_a_shard_skips_its_done_scans(tmp_path, listing, tiny_weights, capsys):
    out = tmp_path / "out"
    assert shard_run(listing, out, "0/2", tiny_weights) == 0
    written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert sorted(written) == ["a.nii.gz", "c.nii.gz", "e.nii.gz"]
    (out / "c.nii.gz").unlink()  # as if the array task had been stopped before that scan
    assert main(["denoise", str(listing), str(out), "--shard", "0/2", "--no-n4", "--weights", str(tiny_weights)]) == 0
    assert "denoised 1, skipped 2 already done, failed 0" in capsys.readouterr().out
    assert (out / "a.nii.gz").stat().st_mtime_ns == written["a.nii.gz"]


def test_more_tasks_than_scans_leaves_the_last_ones_idle(tmp_path, listing, tiny_weights):
    assert shard_run(listing, tmp_path / "out", "7/8", tiny_weights) == 0
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("spec", ["3/3", "-1/3"])
def test_an_index_outside_the_count_is_refused(tmp_path, listing, tiny_weights, capsys, spec):
    assert shard_run(listing, tmp_path / "out", spec, tiny_weights) == 2
    assert "shard" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_malformed_shard_or_a_single_scan_is_refused(tmp_path, listing, tiny_weights, capsys):
    with pytest.raises(SystemExit) as exit_info:
        shard_run(listing, tmp_path / "out", "half", tiny_weights)
    assert exit_info.value.code == 2 and "INDEX/COUNT" in capsys.readouterr().err
    assert shard_run(tmp_path / "a.nii.gz", tmp_path / "a_out.nii.gz", "0/2", tiny_weights) == 2
    assert "not one scan" in capsys.readouterr().err and not (tmp_path / "a_out.nii.gz").exists()


def array_task(listing, out, tiny_weights, **slurm) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                   **{f"SLURM_ARRAY_TASK_{key.upper()}": str(value) for key, value in slurm.items()}}
    return subprocess.run(["bash", str(ARRAY_SBATCH), str(listing), str(out), "--no-n4", "--weights", str(tiny_weights),
                           "--quiet"], env=environment, capture_output=True, text=True, timeout=120, check=False)


def test_array_sbatch_gives_each_task_its_shard(tmp_path, listing, tiny_weights):
    """Task 2 of an array submitted as --array=1-3 (SLURM numbers it 2 of 1..3) takes shard 1/3."""
    text = ARRAY_SBATCH.read_text()
    assert subprocess.run(["bash", "-n", str(ARRAY_SBATCH)], check=False).returncode == 0
    assert "#SBATCH --array=" in text and '--shard "$INDEX/$COUNT"' in text
    task = array_task(listing, tmp_path / "out", tiny_weights, id=2, min=1, count=3)
    assert task.returncode == 0, task.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b.nii.gz", "e.nii.gz"]


def test_array_sbatch_with_a_step_covers_every_scan_once(tmp_path, listing, tiny_weights):
    """--array=0-4:2 runs tasks 0, 2 and 4: shards 0/3, 1/3 and 2/3."""
    for task_id in (0, 2, 4):
        task = array_task(listing, tmp_path / f"out{task_id}", tiny_weights, id=task_id, min=0, count=3, step=2)
        assert task.returncode == 0, task.stderr
    assert sorted(p.name for out in tmp_path.glob("out*") for p in out.iterdir()) == sorted(NAMES)


def test_array_sbatch_outside_an_array_says_so(tmp_path, listing, tiny_weights):
    task = array_task(listing, tmp_path / "out", tiny_weights)
    assert task.returncode != 0 and "submit this script as a job array" in task.stderr


def _array_task_with_stand_ins(tmp_path, mridenoise_body: str) -> subprocess.Popen:
    """Task 2 of array job 77 (--array=0-3), with stand-ins for ``mridenoise`` and ``scontrol``."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    bodies = {"mridenoise": mridenoise_body, "scontrol": f'printf "%s\\n" "$@" > "{tmp_path}/scontrol"'}
    for name, body in bodies.items():
        (fakes / name).write_text(f"#!/bin/bash\n{body}\n")
        (fakes / name).chmod(0o755)
    environment = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "SLURM_ARRAY_JOB_ID": "77",
                   "SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "4"}
    with open(tmp_path / "task.out", "w") as log:  # not a pipe: the stand-in's sleep would hold it open
        return subprocess.Popen(["bash", str(ARRAY_SBATCH), "scans.txt", "out"], env=environment, stdout=log,
                                start_new_session=True)


def test_array_sbatch_requeues_its_task_before_the_time_limit(tmp_path):
    assert "#SBATCH --signal=B:USR1@60\n" in ARRAY_SBATCH.read_text()
    started = tmp_path / "started"
    task = _array_task_with_stand_ins(tmp_path, f'touch "{started}"; exec sleep 20')
    try:
        deadline = time.monotonic() + 10
        while not started.is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        task.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@60 does a minute before the limit
        task.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(task.pid, signal.SIGKILL)
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "77_2"]
    assert "requeueing task 77_2" in (tmp_path / "task.out").read_text()


def test_array_sbatch_ends_with_the_exit_code_of_mridenoise(tmp_path):
    task = _array_task_with_stand_ins(tmp_path, 'echo "$@"; exit 2')  # a scan of the shard failed
    assert task.wait(timeout=10) == 2
    assert (tmp_path / "task.out").read_text().split() == ["denoise", "scans.txt", "out", "--shard", "2/4"]
    assert not (tmp_path / "scontrol").exists()


def test_shards_of_a_list_whose_outputs_would_collide_are_refused(tmp_path, tiny_weights, capsys):
    # Each shard alone holds one of the two T1w.nii.gz: only the whole list shows the clash.
    for subject in ("sub1", "sub2"):
        (tmp_path / subject).mkdir()
        write_volume(tmp_path / subject / "T1w.nii.gz", phantom((16, 20, 18)) + 5.0)
    (tmp_path / "scans.txt").write_text("sub1/T1w.nii.gz\nsub2/T1w.nii.gz\n")
    for index in range(2):
        assert shard_run(tmp_path / "scans.txt", tmp_path / "out", f"{index}/2", tiny_weights) == 2
        assert "would both be written as T1w.nii.gz" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
