"""MRIDenoiseLogic on real MRML scenes (slicer-core): geometry, input untouched, reuse, extra outputs, cancel."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from conftest import phantom
from test_slicer_scene import OBLIQUE_IJK_TO_RAS, SlicerLikeScene, ijk_to_ras, slicer

from MRIDenoiseLib.denoise_job import CANCELLED, COMPLETED
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic
from MRIDenoiseLib.worker_process import InProcessRunner


def noisy(shape=(24, 32, 28), seed=0):
    return add_rician_noise(phantom(shape, seed), 6.0, np.random.default_rng(seed)).astype(np.float32)


def digest(node) -> str:
    return hashlib.sha256(slicer.util.arrayFromVolume(node).tobytes()).hexdigest()


@pytest.fixture
def logic(tiny_weights, tmp_path):
    return MRIDenoiseLogic(runner=InProcessRunner(), temporaryRoot=str(tmp_path), weights=tiny_weights)


def test_process_returns_new_node_with_input_geometry_and_input_untouched(logic, tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy())
    before, volumes_before = digest(source), laid.count("vtkMRMLScalarVolumeNode")
    image_mtime = source.GetImageData().GetMTime()

    output = logic.process(source, biasCorrection=False)

    assert output.IsA("vtkMRMLScalarVolumeNode") and output.GetScene() is laid.scene
    assert output.GetName() == "Phantom denoised"
    assert laid.count("vtkMRMLScalarVolumeNode") == volumes_before + 1
    assert np.array_equal(ijk_to_ras(output), ijk_to_ras(source))
    np.testing.assert_allclose(ijk_to_ras(output), OBLIQUE_IJK_TO_RAS, atol=1e-12)
    assert digest(source) == before and source.GetImageData().GetMTime() == image_mtime
    result, original = slicer.util.arrayFromVolume(output), slicer.util.arrayFromVolume(source)
    assert result.shape == original.shape and result.dtype == np.float32
    assert not np.array_equal(result, original)
    assert output.GetAttribute("MRIDenoise.source") == source.GetID()
    assert float(output.GetAttribute("MRIDenoise.sigma")) > 0
    assert output.GetDisplayNode() is not None
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone


def test_existing_output_is_reused_and_residual_and_bias_field_are_right(logic, tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy())
    transform = laid.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    source.SetAndObserveTransformNodeID(transform.GetID())
    existing = laid.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "kept name")
    slicer.util.updateVolumeFromArray(existing, np.zeros((2, 2, 2), np.float32))
    volumes_before = laid.count("vtkMRMLScalarVolumeNode")

    output = logic.process(source, outputVolume=existing, biasCorrection=True, createResidual=True, createBiasField=True,
                           waitForCompletion=False).wait()

    assert output.state == COMPLETED
    assert output.outputVolume is existing and existing.GetName() == "kept name"
    assert laid.count("vtkMRMLScalarVolumeNode") == volumes_before + 2  # residual and bias field only
    assert output.residualVolume.GetName() == "Phantom residual"
    assert output.biasFieldVolume.GetName() == "Phantom bias field"
    for node in (existing, output.residualVolume, output.biasFieldVolume):
        assert np.array_equal(ijk_to_ras(node), ijk_to_ras(source))
        assert node.GetTransformNodeID() == transform.GetID()
    original = slicer.util.arrayFromVolume(source)
    corrected = slicer.util.arrayFromVolume(existing)
    residual = slicer.util.arrayFromVolume(output.residualVolume)
    field = slicer.util.arrayFromVolume(output.biasFieldVolume)
    assert corrected.shape == residual.shape == field.shape == original.shape
    # residual = input - denoised, and corrected = denoised / field, so input = residual + corrected * field
    np.testing.assert_allclose(residual + corrected * field, original, rtol=1e-4, atol=1e-3 * original.max())
    assert 0.5 < field.min() and field.max() < 2.0 and field.std() > 0
    assert list(tmp_path.iterdir()) == []


def test_bad_requests_are_refused_before_any_work(logic, tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy((8, 8, 8)))
    label = laid.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    slicer.util.updateVolumeFromArray(label, np.ones((4, 4, 4), np.int16))
    vector = laid.scene.AddNewNodeByClass("vtkMRMLVectorVolumeNode", "vectors")
    nodes_before = laid.scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="never overwritten"):
        logic.process(source, outputVolume=source)
    with pytest.raises(ValueError, match="not a scalar volume"):
        logic.process(label)
    with pytest.raises(ValueError, match="needs bias correction"):
        logic.process(source, biasCorrection=False, createBiasField=True)
    with pytest.raises(ValueError, match="Unknown device"):
        logic.process(source, device="tpu")
    for unfit in (label, vector):
        with pytest.raises(ValueError, match="cannot hold a result"):
            logic.process(source, outputVolume=unfit)
    other_scene = SlicerLikeScene().addVolume(noisy((8, 8, 8)), "elsewhere")
    with pytest.raises(ValueError, match="not in the input's scene"):
        logic.process(source, outputVolume=other_scene)
    assert laid.scene.GetNumberOfNodes() == nodes_before
    assert list(tmp_path.iterdir()) == []


def _with_voxel(volume, value):
    volume[1, 2, 3] = value
    return volume


@pytest.mark.parametrize("volume, message", [
    (np.full((8, 8, 8), 5.0, np.float32), "same value"),
    (_with_voxel(noisy((8, 8, 8)), np.nan), "NaN or infinite"),
    (noisy((8, 8, 8)) - 100, "magnitude image"),
])
def test_what_the_worker_would_refuse_is_refused_before_it_starts(logic, tmp_path, volume, message):
    laid = SlicerLikeScene()
    source = laid.addVolume(volume, "Bad")
    nodes_before = laid.scene.GetNumberOfNodes()
    with pytest.raises(ValueError, match=message) as error:
        logic.process(source, biasCorrection=False)
    assert str(error.value).startswith("Bad: ") and "\n" not in str(error.value)
    assert laid.scene.GetNumberOfNodes() == nodes_before
    assert list(tmp_path.iterdir()) == []


def test_a_single_slice_skips_n4_and_cannot_give_a_bias_field(logic):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy((1, 48, 44)), "Slice")
    with pytest.raises(ValueError, match="too thin for N4 bias correction"):
        logic.process(source, createBiasField=True)
    job = logic.process(source, waitForCompletion=False).wait()
    assert job.state == COMPLETED
    assert "bias correction skipped: N4 needs at least 8 voxels along every axis" in " ".join(job.summary["notes"])


def test_a_rerun_replaces_the_residual_it_made_for_the_same_input(logic):
    laid = SlicerLikeScene()
    source, other = laid.addVolume(noisy(), "First"), laid.addVolume(noisy(seed=1), "Second")
    first = logic.process(source, biasCorrection=False, createResidual=True, waitForCompletion=False).wait()
    residual = first.residualVolume
    assert logic.reusableResult(residual, source, "residual") is residual
    assert logic.reusableResult(residual, other, "residual") is None
    assert logic.reusableResult(first.outputVolume, source, "residual") is None
    volumes_before = laid.count("vtkMRMLScalarVolumeNode")
    again = logic.process(source, first.outputVolume, biasCorrection=False,
                          residualVolume=logic.reusableResult(residual, source, "residual"), waitForCompletion=False).wait()
    assert again.residualVolume is residual and laid.count("vtkMRMLScalarVolumeNode") == volumes_before


def test_an_input_removed_during_the_run_ends_the_job_without_results(logic, tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy())
    events = []

    def remove_input_once_denoised(event):
        events.append(event.kind)
        if event.kind == "progress" and event.stage == "loading result" and source.GetScene() is not None:
            laid.scene.RemoveNode(source)

    nodes_before = laid.scene.GetNumberOfNodes()
    job = logic.process(source, biasCorrection=False, waitForCompletion=False, eventCallback=remove_input_once_denoised).wait()
    assert job.state == "failed" and "left the scene during denoising" in job.errorMessage
    assert events[-1] == "failed"
    assert laid.scene.GetNumberOfNodes() == nodes_before - 1  # only the input, removed by the callback
    assert list(tmp_path.iterdir()) == []


def test_worker_error_is_one_line_and_leaves_nothing(tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy((8, 8, 8)))
    logic = MRIDenoiseLogic(runner=InProcessRunner(), temporaryRoot=str(tmp_path), weights=tmp_path / "none.pt")
    nodes_before = laid.scene.GetNumberOfNodes()
    with pytest.raises(RuntimeError) as error:  # the worker finds no weights file
        logic.process(source, biasCorrection=False)
    assert "\n" not in str(error.value) and "none.pt" in str(error.value)
    assert laid.scene.GetNumberOfNodes() == nodes_before
    assert list(tmp_path.iterdir()) == []


def test_cancel_during_denoising_leaves_no_node_and_no_temporary_file(logic, tmp_path):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy((40, 48, 44)))
    existing = laid.addVolume(np.arange(8, dtype=np.float32).reshape(2, 2, 2), "earlier result")
    existing_before = digest(existing)
    nodes_before = laid.scene.GetNumberOfNodes()
    events = []

    while_running = []

    def on_event(event):
        events.append((event.kind, event.stage))
        if event.kind == "progress" and event.stage == "denoising":
            while_running.append(sorted(path.name for path in event.job.temporaryFolder.iterdir()))
            event.job.cancel()

    job = logic.process(source, outputVolume=existing, biasCorrection=False, waitForCompletion=False,
                        eventCallback=on_event)
    job.wait()

    assert job.state == CANCELLED and job.outputVolume is None
    assert len(while_running) == 1 and "input.nrrd" in while_running[0]  # it existed while the worker ran
    assert events[-1] == ("cancelled", "")
    assert ("progress", "preparing") in events and ("completed", "") not in events
    assert laid.scene.GetNumberOfNodes() == nodes_before
    assert digest(existing) == existing_before and existing.GetName() == "earlier result"
    assert list(tmp_path.iterdir()) == []


def test_progress_events_follow_the_stages_in_order(logic):
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy())
    events = []
    logic.process(source, biasCorrection=True, eventCallback=events.append)
    stages = [event.stage for event in events if event.kind == "progress"]
    order = ["preparing", "noise estimate", "denoising", "bias correction", "loading result"]
    assert [stage for stage in order if stage in stages] == order
    assert [stages.index(stage) for stage in order] == sorted(stages.index(stage) for stage in order)
    overall = [event.overall for event in events if event.kind == "progress"]
    assert overall == sorted(overall) and overall[0] == 0.0 and overall[-1] == 1.0
    assert events[-1].kind == "completed" and events[-1].message.startswith("Done in ")
    assert "Estimated noise" in events[-1].message


def test_gpu_fallback_note_reaches_the_status_line(logic, monkeypatch):
    import MRIDenoiseLib.pipeline as pipeline

    real = pipeline.pilot_step
    note = "GPU out of memory in the pilot (OutOfMemoryError); it ran on the CPU"  # what pipeline.py says

    def out_of_memory_then_cpu(volume, sigma, kernel, device, on_fallback, *scale):
        on_fallback(note)
        return real(volume, sigma, kernel, pipeline.resolve_device("cpu"), on_fallback, *scale)

    monkeypatch.setattr(pipeline, "pilot_step", out_of_memory_then_cpu)
    laid = SlicerLikeScene()
    source = laid.addVolume(noisy())
    events = []
    logic.process(source, biasCorrection=False, eventCallback=events.append)
    assert events[-1].kind == "completed"
    assert events[-1].job.summary["notes"] == [note]
    assert events[-1].message.endswith(note)
    assert "on cpu" in events[-1].message
