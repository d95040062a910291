"""Helpers (and their own tests): real MRML scenes from slicer-core, laid out as Slicer lays them out.

The layout itself is MRIDenoiseLib.headless_scene (trame-slicer builds its scene the same way);
here: an oblique geometry, matrix helpers, and checks that the scene and its rendering are right.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
import slicer.util  # noqa: E402, F811 (after the importorskip that binds slicer)
from vtkmodules.vtkCommonMath import vtkMatrix4x4  # noqa: E402

from MRIDenoiseLib.headless_scene import HeadlessScene  # noqa: E402


def oblique_ijk_to_ras(spacing=(0.9, 1.1, 3.0), origin=(-90.5, 12.25, 40.0)) -> np.ndarray:
    """10 degrees about S, then 5 about R: every direction cosine non-trivial; a non-zero origin."""
    a, b = np.radians(10.0), np.radians(5.0)
    about_s = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    about_r = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    result = np.eye(4)
    result[:3, :3] = about_s @ about_r @ np.diag(spacing)
    result[:3, 3] = origin
    return result


OBLIQUE_IJK_TO_RAS = oblique_ijk_to_ras()


class SlicerLikeScene(HeadlessScene):
    """MRIDenoiseLib's headless scene, with the test helpers' defaults (an oblique phantom)."""

    def addVolume(self, array: np.ndarray, name: str = "Phantom", ijkToRas=OBLIQUE_IJK_TO_RAS):
        return super().addVolume(array, name, ijkToRas)

    def count(self, className: str) -> int:
        return self.scene.GetNumberOfNodesByClass(className)


def matrix(rows) -> vtkMatrix4x4:
    result = vtkMatrix4x4()
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            result.SetElement(i, j, value)
    return result


def ijk_to_ras(node) -> np.ndarray:
    result = vtkMatrix4x4()
    node.GetIJKToRASMatrix(result)
    return np.array([[result.GetElement(i, j) for j in range(4)] for i in range(4)])


def slice_to_ras(sliceNode) -> np.ndarray:
    m = sliceNode.GetSliceToRAS()
    return np.array([[m.GetElement(i, j) for j in range(4)] for i in range(4)])


def test_scene_is_laid_out_like_slicer():
    laid = SlicerLikeScene()
    orientations = {node.GetLayoutName(): node.GetOrientation() for node in laid.scene.GetNodesByClass("vtkMRMLSliceNode")}
    assert orientations == {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
    composites = sorted(node.GetLayoutName() for node in laid.scene.GetNodesByClass("vtkMRMLSliceCompositeNode"))
    assert composites == ["Green", "Red", "Yellow"]
    assert laid.layoutNode.GetViewArrangement() == slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView


def test_oblique_volume_keeps_its_matrix():
    laid = SlicerLikeScene()
    node = laid.addVolume(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    np.testing.assert_allclose(ijk_to_ras(node), OBLIQUE_IJK_TO_RAS, atol=1e-12)
    directions = OBLIQUE_IJK_TO_RAS[:3, :3] / np.array([0.9, 1.1, 3.0])
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-12)


def test_rendered_views_show_what_the_composite_nodes_say():
    laid = SlicerLikeScene()
    rng = np.random.default_rng(1)
    bright = laid.addVolume((rng.random((10, 20, 30)) * 100 + 100).astype(np.float32), "bright", np.eye(4))
    dark = laid.addVolume((bright_values := slicer.util.arrayFromVolume(bright)) * 0.5, "dark", np.eye(4))
    from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic

    MRIDenoiseLogic(sliceLogicLookup=laid.sliceLogicLookup).showComparison(bright, bright)
    left, right = laid.render("Red", 80, 60), laid.render("Yellow", 80, 60)
    assert left.shape == (60, 80, 4) and left.dtype == np.uint8
    assert np.array_equal(left, right) and left[..., 0].std() > 10  # same volume, same view: same pixels
    MRIDenoiseLogic(sliceLogicLookup=laid.sliceLogicLookup).showComparison(bright, dark)
    left, right = laid.render("Red", 80, 60), laid.render("Yellow", 80, 60)
    # same window/level: the half-intensity copy is darker wherever the original is visible
    visible = left[..., 0] > 0
    assert visible.mean() > 0.3 and np.all(right[..., 0][visible] <= left[..., 0][visible])
    assert right[..., 0][visible].mean() < 0.5 * left[..., 0][visible].mean()
    assert bright_values.min() >= 100
