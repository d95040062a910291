"""Helpers (and their own test): real MRML scenes from slicer-core, laid out the way Slicer lays out its main window.

Slicer's layout manager creates the application logic with its colour nodes and slice orientation
presets, a layout logic that owns the layout node and creates the Red, Yellow and Green slice nodes
for the conventional layout, and one slice logic per slice view (which creates that view's slice
composite node). trame-slicer builds its scene the same way.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
import slicer.util  # noqa: E402
from vtkmodules.vtkCommonCore import vtkCollection  # noqa: E402
from vtkmodules.vtkCommonMath import vtkMatrix4x4  # noqa: E402


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


class SlicerLikeScene:
    """A scene plus the logics Slicer's main window would have created for it."""

    def __init__(self):
        self.scene = slicer.vtkMRMLScene()
        self.applicationLogic = slicer.vtkSlicerApplicationLogic()
        self.applicationLogic.SetMRMLScene(self.scene)
        self.applicationLogic.GetColorLogic().SetMRMLScene(self.scene)
        self.applicationLogic.GetColorLogic().AddDefaultColorNodes()
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene, True)
        self.layoutLogic = slicer.vtkMRMLLayoutLogic()
        self.layoutLogic.SetMRMLScene(self.scene)
        self.layoutNode = self.scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
        self.layoutNode.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutConventionalView)
        self.sliceLogics = {}
        self.applicationLogic.SetSliceLogics(vtkCollection())
        for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.applicationLogic)
            self.applicationLogic.GetSliceLogics().AddItem(logic)
            logic.SetMRMLScene(self.scene)
            logic.AddSliceNode(name)
            sliceNode = self.scene.GetSingletonNode(name, "vtkMRMLSliceNode")  # the layout logic's node
            logic.SetSliceNode(sliceNode)
            sliceNode.SetDefaultOrientation(orientation)  # what the layout's view factory applies
            sliceNode.SetOrientationToDefault()
            self.sliceLogics[name] = logic

    def sliceLogicLookup(self, name):
        return self.sliceLogics.get(name)

    def addVolume(self, array: np.ndarray, name: str = "Phantom", ijkToRas=OBLIQUE_IJK_TO_RAS):
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        slicer.util.updateVolumeFromArray(node, array)
        node.SetIJKToRASMatrix(matrix(ijkToRas))
        node.CreateDefaultDisplayNodes()
        return node

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
