"""showComparison / showFade on a scene laid out as Slicer lays it out (slicer-core, no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from test_slicer_scene import SlicerLikeScene, slice_to_ras, slicer

from MRIDenoiseLib.comparison import ONE_UP_RED_LAYOUT_ID, SIDE_BY_SIDE_LAYOUT_ID, THREE_VIEW_LAYOUT_ID
from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic


def three_volumes(laid):
    rng = np.random.default_rng(0)
    original = laid.addVolume((rng.random((12, 16, 14)) * 400).astype(np.float32), "T1")
    denoised = laid.addVolume((rng.random((12, 16, 14)) * 90).astype(np.float32), "T1 denoised")
    residual = laid.addVolume((rng.normal(size=(12, 16, 14)) * 7).astype(np.float32), "T1 residual")
    return original, denoised, residual


def composite(laid, name):
    return laid.sliceLogics[name].GetSliceCompositeNode()


def test_side_by_side_sets_layout_views_links_and_window_level():
    laid = SlicerLikeScene()
    original, denoised, _ = three_volumes(laid)
    composite(laid, "Yellow").SetForegroundVolumeID(original.GetID())  # left over from earlier work
    logic = MRIDenoiseLogic(sliceLogicLookup=laid.sliceLogicLookup)

    used = logic.showComparison(original, denoised)

    assert laid.layoutNode.GetViewArrangement() == SIDE_BY_SIDE_LAYOUT_ID == slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView
    assert [node.GetLayoutName() for node in used] == ["Red", "Yellow"]
    assert composite(laid, "Red").GetBackgroundVolumeID() == original.GetID()
    assert composite(laid, "Yellow").GetBackgroundVolumeID() == denoised.GetID()
    assert composite(laid, "Yellow").GetForegroundVolumeID() is None
    assert all(node.GetLinkedControl() and node.GetHotLinkedControl() for node in used)
    red, yellow = (laid.sliceLogics[name].GetSliceNode() for name in ("Red", "Yellow"))
    assert red.GetOrientation() == yellow.GetOrientation() == "Axial"  # Yellow was Sagittal
    assert np.array_equal(slice_to_ras(red), slice_to_ras(yellow))
    assert tuple(red.GetFieldOfView()) == tuple(yellow.GetFieldOfView())
    # fitted to the volume: the field of view is about the volume's extent, not Slicer's 250 mm default
    assert max(red.GetFieldOfView()[:2]) < 100
    a, b = original.GetDisplayNode(), denoised.GetDisplayNode()
    assert (a.GetWindow(), a.GetLevel()) == (b.GetWindow(), b.GetLevel())
    assert not a.GetAutoWindowLevel() and not b.GetAutoWindowLevel()
    assert a.GetWindow() > 300  # the original's window, not the denoised one's (values 0..90)


def test_residual_adds_a_third_view_in_one_row_centred_on_zero():
    laid = SlicerLikeScene()
    original, denoised, residual = three_volumes(laid)
    laid.sliceLogics["Red"].GetSliceNode().SetOrientation("Coronal")
    logic = MRIDenoiseLogic(sliceLogicLookup=laid.sliceLogicLookup)

    used = logic.showComparison(original, denoised, residual)

    assert laid.layoutNode.GetViewArrangement() == THREE_VIEW_LAYOUT_ID
    description = laid.layoutNode.GetLayoutDescription(THREE_VIEW_LAYOUT_ID)
    assert description.startswith('<layout type="horizontal">') and description.count("vtkMRMLSliceNode") == 3
    assert [node.GetBackgroundVolumeID() for node in used] == [original.GetID(), denoised.GetID(), residual.GetID()]
    orientations = {laid.sliceLogics[name].GetSliceNode().GetOrientation() for name in ("Red", "Yellow", "Green")}
    assert orientations == {"Coronal"}  # the orientation the reader had chosen is kept for all three
    display = residual.GetDisplayNode()
    values = slicer.util.arrayFromVolume(residual)
    assert display.GetLevel() == 0.0
    assert display.GetWindow() == pytest.approx(2 * np.percentile(np.abs(values), 99.5), rel=1e-6)
    # calling it again does not register the layout twice and keeps the same views
    logic.showComparison(original, denoised, residual)
    assert laid.layoutNode.GetViewArrangement() == THREE_VIEW_LAYOUT_ID


def test_fade_puts_denoised_over_original_with_opacity():
    laid = SlicerLikeScene()
    original, denoised, _ = three_volumes(laid)
    logic = MRIDenoiseLogic()

    logic.showFade(original, denoised, opacity=0.3)

    red = composite(laid, "Red")
    assert laid.layoutNode.GetViewArrangement() == ONE_UP_RED_LAYOUT_ID
    assert red.GetBackgroundVolumeID() == original.GetID() and red.GetForegroundVolumeID() == denoised.GetID()
    assert red.GetForegroundOpacity() == pytest.approx(0.3)
    logic.setFadeOpacity(laid.scene, 1.7)
    assert red.GetForegroundOpacity() == 1.0
    # back to the comparison: the fade's foreground is cleared
    logic.showComparison(original, denoised)
    assert red.GetForegroundVolumeID() is None


def test_scene_without_layout_gives_a_clear_error():
    scene = slicer.vtkMRMLScene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    slicer.util.updateVolumeFromArray(volume, np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    with pytest.raises(RuntimeError, match="no layout node"):
        MRIDenoiseLogic().showComparison(volume, volume)


def test_snapshot_renders_the_three_views_of_a_real_run(tmp_path, tiny_weights):
    from conftest import phantom, write_volume

    from MRIDenoiseLib.comparison_snapshot import snapshot
    from MRIDenoiseLib.worker_process import InProcessRunner

    scan = write_volume(tmp_path / "phantom.nrrd", phantom((20, 40, 36)), spacing=(1.0, 1.0, 2.0))
    logic = MRIDenoiseLogic(runner=InProcessRunner(), weights=tiny_weights)
    facts = snapshot(scan, tmp_path / "comparison.png", logic=logic, add_noise_percent=4.0, size=(120, 100))
    data = (tmp_path / "comparison.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 360  # three 120-pixel views side by side
    assert "phantom.nrrd + 4% Rician noise" in facts["caption"] and facts["sigma"] > 0


def scroll(logic, millimetres):
    """What the slice view's interactor does when the reader scrolls: an offset change inside an interaction."""
    logic.StartSliceOffsetInteraction()
    logic.SetSliceOffset(logic.GetSliceOffset() + millimetres)
    logic.EndSliceOffsetInteraction()


def test_scrolling_one_view_scrolls_the_others_through_slicers_link_logic():
    laid = SlicerLikeScene()
    original, denoised, residual = three_volumes(laid)
    logic = MRIDenoiseLogic(sliceLogicLookup=laid.sliceLogicLookup)
    red, yellow, green = (laid.sliceLogics[name] for name in ("Red", "Yellow", "Green"))

    logic.showComparison(original, denoised, residual)
    start = red.GetSliceOffset()
    scroll(red, 6.0)
    assert red.GetSliceOffset() == pytest.approx(start + 6.0)
    assert yellow.GetSliceOffset() == pytest.approx(start + 6.0)
    assert green.GetSliceOffset() == pytest.approx(start + 6.0)
    scroll(green, -9.0)
    assert red.GetSliceOffset() == pytest.approx(start - 3.0) == yellow.GetSliceOffset()

    # the same scroll with the views unlinked moves one view only: the links above are what did it
    for name in ("Red", "Yellow", "Green"):
        composite(laid, name).SetLinkedControl(False)
    scroll(red, 6.0)
    assert red.GetSliceOffset() == pytest.approx(start + 3.0)
    assert yellow.GetSliceOffset() == pytest.approx(start - 3.0)


def test_output_becomes_the_active_volume():
    laid = SlicerLikeScene()
    original, denoised, _ = three_volumes(laid)
    assert MRIDenoiseLogic.setActiveVolume(denoised) is True
    assert laid.scene.GetFirstNodeByClass("vtkMRMLSelectionNode").GetActiveVolumeID() == denoised.GetID()
    bare = slicer.vtkMRMLScene()
    volume = bare.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    assert MRIDenoiseLogic.setActiveVolume(volume) is False
