"""The worker as a real process: protocol round trip, a full run, killing the process tree on cancel."""

from __future__ import annotations

import io
import os
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

from conftest import phantom
from test_slicer_scene import SlicerLikeScene, ijk_to_ras, slicer

from MRIDenoiseLib import pipeline
from MRIDenoiseLib import progress_protocol as protocol
from MRIDenoiseLib.denoise_job import CANCELLED, COMPLETED
from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic
from MRIDenoiseLib.worker import EXIT_USER
from MRIDenoiseLib.worker import main as worker_main
from MRIDenoiseLib.worker_process import SubprocessRunner, kill_process_tree

LIGHT = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def gone(pid: int, timeout: float = 5.0) -> bool:
    """The process no longer runs (a zombie waiting for its reaper counts as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("message", [
    protocol.Progress("denoising", 0.375),
    protocol.Log("note: GPU out of memory (OutOfMemoryError); running on the CPU — ü"),
    protocol.Finished({"sigma": 4.25, "sigma_percent": 1.5, "device": "cpu", "seconds": {"denoising": 2.5}, "notes": []}),
    protocol.Failed("input.nrrd: every voxel has the same value (5.0); nothing to denoise", "Traceback ...\nline 2"),
])
def test_every_message_round_trips_through_one_line(message):
    line = protocol.encode(message)
    assert "\n" not in line and line.startswith(protocol.PREFIX)
    assert protocol.decode(line + "\n") == message


def test_stage_names_are_the_pipelines_and_progress_is_monotonic():
    stages = [protocol.STAGE_PREPARING, pipeline.STAGE_NOISE, pipeline.STAGE_DENOISE, pipeline.STAGE_BIAS, protocol.STAGE_LOADING]
    points = [protocol.overall_fraction(stage, f) for stage in stages for f in (0.0, 0.5, 1.0)]
    assert points == sorted(points) and points[0] == 0.0 and points[-1] == 1.0
    assert protocol.overall_fraction(pipeline.STAGE_DENOISE, 1.0, bias_correction=False) == pytest.approx(0.95)


def test_worker_main_reports_a_user_error_in_one_line(tmp_path, tiny_weights):
    output = io.StringIO()
    code = worker_main([str(tmp_path / "missing.nrrd"), str(tmp_path / "out.nrrd"), "--weights", str(tiny_weights)],
                       output=output)
    messages = [protocol.decode(line) for line in output.getvalue().splitlines()]
    assert code == EXIT_USER
    assert isinstance(messages[-1], protocol.Failed) and "no such file" in messages[-1].message
    assert not (tmp_path / "out.nrrd").exists()


def test_real_worker_process_runs_and_its_progress_is_parsed(tiny_weights, tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(phantom((20, 24, 22)))
    logic = MRIDenoiseLogic(runner=SubprocessRunner(environment=LIGHT), temporaryRoot=str(tmp_path / "tmp"),
                            weights=tiny_weights)
    (tmp_path / "tmp").mkdir()
    events = []

    output = logic.process(source, biasCorrection=False, device="cpu", createResidual=True, eventCallback=events.append)

    progress = [(event.stage, event.fraction) for event in events if event.kind == "progress"]
    assert progress[0] == ("preparing", 0.0) and progress[-1] == ("loading result", 1.0)
    assert ("denoising", 1.0) in progress and ("noise estimate", 1.0) in progress
    assert events[-1].kind == "completed" and "on cpu" in events[-1].message
    assert np.array_equal(ijk_to_ras(output), ijk_to_ras(source))
    job = events[-1].job
    assert job.state == COMPLETED and job.summary["device"] == "cpu" and job.summary["sigma"] > 0
    assert any(line.startswith("estimated noise sigma") for line in job.logLines)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(job.residualVolume) + slicer.util.arrayFromVolume(output),
                               slicer.util.arrayFromVolume(source), atol=1e-3)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_cancel_kills_the_real_worker_and_leaves_no_node_and_no_file(tiny_weights, tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(phantom((20, 24, 22)))
    logic = MRIDenoiseLogic(runner=SubprocessRunner(environment=LIGHT), temporaryRoot=str(tmp_path), weights=tiny_weights)
    nodes_before = laid.scene.GetNumberOfNodes()
    job = logic.process(source, waitForCompletion=False)
    pid = job.workerProcess.pid
    assert psutil.pid_exists(pid) and any(tmp_path.iterdir())
    job.cancel()
    assert job.state == CANCELLED and not job.poll()
    assert gone(pid)
    assert laid.scene.GetNumberOfNodes() == nodes_before
    assert list(tmp_path.iterdir()) == []


SPAWNER = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(child.pid, flush=True)
    time.sleep(120)
""")


def test_kill_process_tree_kills_grandchildren_too(tmp_path):
    (tmp_path / "spawner.py").write_text(SPAWNER)
    worker = SubprocessRunner(module="spawner", library_parent=tmp_path).start([])
    deadline = time.monotonic() + 30
    lines = []
    while not lines and time.monotonic() < deadline:
        lines = worker.read_lines()
        time.sleep(0.02)
    child = psutil.Process(int(lines[0]))
    assert child.ppid() == worker.pid and child.is_running()
    worker.kill()
    assert worker.exit_code() is not None
    assert gone(child.pid)


def test_kill_process_tree_of_a_finished_process_is_harmless():
    process = psutil.Popen([sys.executable, "-c", "pass"])
    process.wait()
    kill_process_tree(process.pid)
