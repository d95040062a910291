"""Volume nodes to files and back, through Slicer's own NRRD storage node, without touching the scene.

Both directions work in a private scratch scene, so the user's scene never sees a temporary node
and the input node is only read (its image data is shared, not copied, while it is written).
Needs slicer-core (or a real Slicer); nothing here imports Qt.
"""

from __future__ import annotations

from pathlib import Path


def _slicer():
    import slicer

    return slicer


def write_volume_node(volume_node, path: Path | str) -> None:
    """Write ``volume_node``'s voxels and geometry (IJK-to-RAS, as LPS in the file) to ``path``."""
    slicer = _slicer()
    scratch = slicer.vtkMRMLScene()
    view = slicer.vtkMRMLScalarVolumeNode()
    scratch.AddNode(view)
    view.CopyOrientation(volume_node)
    view.SetAndObserveImageData(volume_node.GetImageData())
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scratch.AddNode(storage)
    storage.SetFileName(str(path))
    storage.SetUseCompression(False)
    if not storage.WriteData(view):
        raise OSError(f"could not write the volume to {path}")
    view.SetAndObserveImageData(None)
    scratch.Clear(True)


def read_image_data(path: Path | str):
    """The voxels of the volume file at ``path`` as a new ``vtkImageData`` (geometry is ignored:
    results take the input node's geometry exactly)."""
    slicer = _slicer()
    from vtkmodules.vtkCommonDataModel import vtkImageData

    scratch = slicer.vtkMRMLScene()
    node = slicer.vtkMRMLScalarVolumeNode()
    scratch.AddNode(node)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scratch.AddNode(storage)
    storage.SetFileName(str(path))
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise OSError(f"could not read the worker's result {path}")
    image = vtkImageData()
    image.DeepCopy(node.GetImageData())
    scratch.Clear(True)
    return image
