"""Side-by-side and fade views of an original and its denoised volume, at MRML level (no Qt).

Works on the scene's layout node and the Red, Yellow and Green slice and slice-composite nodes,
which Slicer always has; Slicer's layout manager redraws the views when these nodes change.

>>> from MRIDenoiseLib.comparison import THREE_VIEW_LAYOUT_ID, layout_xml
>>> layout_xml(["Red", "Yellow", "Green"]).count("<item>")
3
"""

from __future__ import annotations

from typing import Optional, Sequence

SIDE_BY_SIDE_LAYOUT_ID = 29  # vtkMRMLLayoutNode.SlicerLayoutSideBySideView: Red | Yellow
ONE_UP_RED_LAYOUT_ID = 6  # vtkMRMLLayoutNode.SlicerLayoutOneUpRedSliceView, for the fade
THREE_VIEW_LAYOUT_ID = 50301  # ours: Red | Yellow | Green in one row
VIEW_NAMES = ("Red", "Yellow", "Green")
_VIEW_LOOK = {"Red": ("R", "#F34A33"), "Yellow": ("Y", "#EDD54C"), "Green": ("G", "#6EB04B")}
STANDARD_ORIENTATIONS = ("Axial", "Sagittal", "Coronal")


def layout_xml(views: Sequence[str], orientation: str = "Axial") -> str:
    """A one-row layout description holding the named slice views."""
    items = "".join(
        f'<item><view class="vtkMRMLSliceNode" singletontag="{name}">'
        f'<property name="orientation" action="default">{orientation}</property>'
        f'<property name="viewlabel" action="default">{_VIEW_LOOK[name][0]}</property>'
        f'<property name="viewcolor" action="default">{_VIEW_LOOK[name][1]}</property>'
        f"</view></item>"
        for name in views
    )
    return f'<layout type="horizontal">{items}</layout>'


def _by_layout_name(scene, class_name: str, name: str):
    for index in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(index, class_name)
        if node.GetLayoutName() == name:
            return node
    raise RuntimeError(f"the scene has no {class_name} for the {name} view (is it laid out by Slicer?)")


def layout_node(scene):
    node = scene.GetFirstNodeByClass("vtkMRMLLayoutNode")
    if node is None:
        raise RuntimeError("the scene has no layout node (is it laid out by Slicer?)")
    return node


def slice_nodes(scene, views: Sequence[str] = VIEW_NAMES):
    return [_by_layout_name(scene, "vtkMRMLSliceNode", name) for name in views]


def composite_nodes(scene, views: Sequence[str] = VIEW_NAMES):
    return [_by_layout_name(scene, "vtkMRMLSliceCompositeNode", name) for name in views]


def _display_node(volume):
    if volume.GetDisplayNode() is None:
        volume.CreateDefaultDisplayNodes()
    return volume.GetDisplayNode()


def match_window_level(reference, volume) -> None:
    """Show ``volume`` with ``reference``'s window and level (auto window/level off on both)."""
    source, target = _display_node(reference), _display_node(volume)
    window, level = source.GetWindow(), source.GetLevel()
    source.AutoWindowLevelOff()
    target.AutoWindowLevelOff()
    target.SetWindowLevel(window, level)


def show_residual_symmetric(residual) -> None:
    """Centre the residual's grey scale on zero, wide enough for 99.5% of its voxels."""
    import numpy as np
    from vtkmodules.util.numpy_support import vtk_to_numpy

    values = vtk_to_numpy(residual.GetImageData().GetPointData().GetScalars())
    half = float(np.percentile(np.abs(values), 99.5)) or 1.0
    display = _display_node(residual)
    display.AutoWindowLevelOff()
    display.SetWindowLevel(2.0 * half, 0.0)


def show_comparison(input_volume, output_volume, residual_volume=None, slice_logic_lookup=None) -> list:
    """Original | denoised (| residual) in one row, same orientation and position, linked, same W/L.

    ``slice_logic_lookup(layoutName)`` (Slicer: ``applicationLogic.GetSliceLogicByLayoutName``)
    is used, when given, to fit the first view to the volume before the others copy it.
    Returns the slice composite nodes used, left to right.
    """
    scene = input_volume.GetScene()
    volumes = [input_volume, output_volume] + ([residual_volume] if residual_volume is not None else [])
    views = VIEW_NAMES[: len(volumes)]
    layout = layout_node(scene)
    first_slice = slice_nodes(scene, views[:1])[0]
    orientation = first_slice.GetOrientation()
    if orientation not in STANDARD_ORIENTATIONS:
        orientation = "Axial"
    if len(views) == 3:
        if not layout.IsLayoutDescription(THREE_VIEW_LAYOUT_ID):
            layout.AddLayoutDescription(THREE_VIEW_LAYOUT_ID, layout_xml(views, orientation))
        layout.SetViewArrangement(THREE_VIEW_LAYOUT_ID)
    else:
        layout.SetViewArrangement(SIDE_BY_SIDE_LAYOUT_ID)

    composites = composite_nodes(scene, views)
    for composite, volume in zip(composites, volumes):
        composite.SetBackgroundVolumeID(volume.GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetLinkedControl(True)
        composite.SetHotLinkedControl(True)
    match_window_level(input_volume, output_volume)
    if residual_volume is not None:
        show_residual_symmetric(residual_volume)

    first_slice.SetOrientation(orientation)
    if slice_logic_lookup is not None:
        logic = slice_logic_lookup(views[0])
        if logic is not None:
            logic.FitSliceToBackground()
            logic.SnapSliceOffsetToIJK()
    for other in slice_nodes(scene, views[1:]):
        wasModifying = other.StartModify()
        other.SetOrientation(orientation)
        other.GetSliceToRAS().DeepCopy(first_slice.GetSliceToRAS())
        other.SetFieldOfView(*first_slice.GetFieldOfView())
        other.SetXYZOrigin(*first_slice.GetXYZOrigin())
        other.UpdateMatrices()
        other.EndModify(wasModifying)
    return composites


def show_fade(input_volume, output_volume, opacity: float = 0.5) -> object:
    """One view: the original as background, the denoised volume over it at ``opacity``."""
    scene = input_volume.GetScene()
    layout_node(scene).SetViewArrangement(ONE_UP_RED_LAYOUT_ID)
    match_window_level(input_volume, output_volume)
    composite = composite_nodes(scene, ["Red"])[0]
    composite.SetBackgroundVolumeID(input_volume.GetID())
    composite.SetForegroundVolumeID(output_volume.GetID())
    set_fade_opacity(scene, opacity)
    return composite


def set_fade_opacity(scene, opacity: float, views: Optional[Sequence[str]] = ("Red",)) -> None:
    """Foreground opacity of the fade view (0: original only, 1: denoised only)."""
    for composite in composite_nodes(scene, views):
        composite.SetForegroundOpacity(min(max(float(opacity), 0.0), 1.0))
