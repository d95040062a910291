"""A scene laid out the way Slicer's main window lays it out, for slicer-core without Qt.

Slicer's layout manager creates the application logic with its colour nodes and slice orientation
presets, a layout logic that owns the layout node and the Red, Yellow and Green slice nodes of the
conventional layout, and one slice logic per view (which creates that view's slice composite node).
The same here, so the logic's comparison can be tested, and its views rendered offscreen through
Slicer's own slice pipeline (reslice, window/level, layer blending: what a slice view displays).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))


class HeadlessScene:
    def __init__(self):
        import slicer
        from vtkmodules.vtkCommonCore import vtkCollection

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
        self.applicationLogic.SetSliceLogics(vtkCollection())
        self.sliceLogics = {}
        for name, orientation in VIEWS:
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

    def sliceLogicLookup(self, name: str):
        return self.sliceLogics.get(name)

    def addVolume(self, array: np.ndarray, name: str, ijkToRas=None):
        """A scalar volume node from a z-y-x array, with a 4x4 IJK-to-RAS matrix (default identity)."""
        import slicer.util
        from vtkmodules.vtkCommonMath import vtkMatrix4x4

        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        slicer.util.updateVolumeFromArray(node, np.ascontiguousarray(array))
        if ijkToRas is not None:
            matrix = vtkMatrix4x4()
            for i in range(4):
                for j in range(4):
                    matrix.SetElement(i, j, float(np.asarray(ijkToRas)[i][j]))
            node.SetIJKToRASMatrix(matrix)
        node.CreateDefaultDisplayNodes()
        return node

    def loadVolume(self, path: Path | str, name: str | None = None):
        """Read a volume file (NRRD, NIfTI, ...) with Slicer's storage node, geometry included."""
        node = self.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name or Path(path).name.split(".")[0])
        storage = self.scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            raise OSError(f"could not read {path}")
        node.SetAndObserveStorageNodeID(storage.GetID())
        node.CreateDefaultDisplayNodes()
        return node

    def render(self, view: str, width: int, height: int) -> np.ndarray:
        """The RGBA image (height, width, 4; uint8, top row first) the named slice view would display."""
        from vtkmodules.util.numpy_support import vtk_to_numpy

        logic = self.sliceLogics[view]
        logic.ResizeSliceNode(width, height)
        connection = logic.GetImageDataConnection()
        producer = connection.GetProducer()
        producer.Update()
        image = producer.GetOutputDataObject(connection.GetIndex())
        columns, rows, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1)
        return pixels[::-1].copy()  # VTK's first row is the bottom one
