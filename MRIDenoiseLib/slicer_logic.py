"""MRIDenoiseLogic: denoise volume nodes and show the comparison, with slicer-core alone (no Qt).

The module's logic in MRIDenoise.py is a thin subclass that adds Slicer's own runner (PythonSlicer),
a QTimer poller and dependency installation. Scripted use, in Slicer or in plain Python::

    logic = MRIDenoiseLogic()
    output = logic.process(volumeNode, biasCorrection=False)   # a new node in volumeNode's scene
    logic.showComparison(volumeNode, output)
"""

from __future__ import annotations

from typing import Callable, Optional

from vtkmodules.util.numpy_support import vtk_to_numpy

from . import comparison
from .denoise_job import ATTRIBUTE_PREFIX, DenoiseEvent, DenoiseJob, DenoiseRequest
from .input_checks import N4_MIN_VOXELS, can_correct_bias, check_voxels
from .worker_process import SubprocessRunner, WorkerRunner

Poller = Callable[[Callable[[], bool]], None]
DEVICES = ("auto", "gpu", "cuda", "mps", "cpu")


class MRIDenoiseLogic:
    """Runs denoising jobs on volume nodes and lays out their comparison.

    ``runner`` starts the worker (default: a subprocess with this Python); ``poller(step)`` calls
    ``step`` repeatedly from the scene's thread until it returns False (Slicer: a QTimer; default
    none, so asynchronous callers poll the returned job themselves); ``temporaryRoot`` is where the
    temporary folders go; ``sliceLogicLookup`` fits the first view to the volume (Slicer:
    ``applicationLogic.GetSliceLogicByLayoutName``).
    """

    def __init__(self, runner: Optional[WorkerRunner] = None, poller: Optional[Poller] = None,
                 temporaryRoot: Optional[str] = None, sliceLogicLookup=None, weights: Optional[str] = None):
        self.runner = runner or SubprocessRunner()
        self.poller = poller
        self.temporaryRoot = temporaryRoot
        self.sliceLogicLookup = sliceLogicLookup
        self.weights = None if weights is None else str(weights)
        self.idle: Optional[Callable[[], None]] = None  # run between polls of a blocking call

    @staticmethod
    def checkInput(inputVolume) -> None:
        """Raise ValueError with a one-line reason unless ``inputVolume`` is a non-empty scalar volume."""
        if inputVolume is None:
            raise ValueError("Select an input volume.")
        if not inputVolume.IsA("vtkMRMLScalarVolumeNode") or inputVolume.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError(f"{inputVolume.GetName()} is not a scalar volume "
                             "(label maps, vector and tensor volumes are not denoised).")
        image = inputVolume.GetImageData()
        if image is None or image.GetNumberOfPoints() == 0 or image.GetPointData().GetScalars() is None:
            raise ValueError(f"{inputVolume.GetName()} holds no voxels.")
        if image.GetNumberOfScalarComponents() != 1:
            raise ValueError(f"{inputVolume.GetName()} has {image.GetNumberOfScalarComponents()} components per voxel; "
                             "a scalar MRI volume is needed.")
        if inputVolume.GetScene() is None:
            raise ValueError(f"{inputVolume.GetName()} is not in a scene.")
        # What the worker would refuse, refused here before it starts (InputError is a ValueError).
        check_voxels(vtk_to_numpy(image.GetPointData().GetScalars()), inputVolume.GetName())

    @staticmethod
    def reusableResult(node, inputVolume, kind: str):
        """``node`` if it holds the ``kind`` result ("residual", "bias field") of ``inputVolume``'s
        last run and is still in its scene, so that a new run replaces it; else None (a new node)."""
        if node is None or inputVolume is None or node.GetScene() is not inputVolume.GetScene():
            return None
        madeForInput = node.GetAttribute(ATTRIBUTE_PREFIX + "source") == inputVolume.GetID()
        return node if madeForInput and node.GetAttribute(ATTRIBUTE_PREFIX + "kind") == kind else None

    def createRequest(self, inputVolume, outputVolume=None, biasCorrection=True, device="auto",
                      createResidual=False, createBiasField=False, residualVolume=None, biasFieldVolume=None,
                      preserveDetail=False, thorough=False, noiseMap=False) -> DenoiseRequest:
        self.checkInput(inputVolume)
        if device not in DEVICES:
            raise ValueError(f"Unknown device {device!r}: use one of {', '.join(DEVICES)}.")
        others = [node for node in (outputVolume, residualVolume, biasFieldVolume) if node is not None]
        if any(node is inputVolume for node in others):
            raise ValueError("The output must be a different volume than the input: the input is never overwritten.")
        if len({id(node) for node in others}) != len(others):
            raise ValueError("The output, residual and bias field volumes must be different volumes.")
        for node in others:
            if node.GetClassName() != "vtkMRMLScalarVolumeNode":  # not its subclasses: label maps, vectors, tensors
                raise ValueError(f"{node.GetName()} cannot hold a result: results go into scalar volumes.")
            if node.GetScene() is not inputVolume.GetScene():
                raise ValueError(f"{node.GetName()} is not in the input's scene.")
        wantsBiasField = createBiasField or biasFieldVolume is not None
        if wantsBiasField and not biasCorrection:
            raise ValueError("A bias field volume needs bias correction: turn N4 bias correction on.")
        if wantsBiasField and not can_correct_bias(inputVolume.GetImageData().GetDimensions()):
            raise ValueError(f"{inputVolume.GetName()} is too thin for N4 bias correction (it needs {N4_MIN_VOXELS} voxels "
                             "along every axis): untick the bias field output.")
        return DenoiseRequest(inputVolume, outputVolume, bool(biasCorrection), device, bool(createResidual),
                              bool(createBiasField), residualVolume, biasFieldVolume, self.weights, bool(preserveDetail),
                              bool(thorough), bool(noiseMap))

    def process(self, inputVolume, outputVolume=None, biasCorrection=True, device="auto",
                createResidual=False, createBiasField=False, residualVolume=None, biasFieldVolume=None,
                waitForCompletion=True, eventCallback: Optional[Callable[[DenoiseEvent], None]] = None,
                preserveDetail=False, thorough=False, noiseMap=False):
        """Denoise ``inputVolume`` into ``outputVolume`` (None: a new node named after the input).

        Blocking by default: returns the output node, or raises RuntimeError with the one-line
        reason if the run failed. With ``waitForCompletion=False`` it returns the running
        :class:`DenoiseJob` at once (``job.cancel()``; ``job.outputVolume`` once completed) and
        reports through ``eventCallback``; without a poller, call ``job.poll()`` or ``job.wait()``.
        """
        request = self.createRequest(inputVolume, outputVolume, biasCorrection, device, createResidual,
                                     createBiasField, residualVolume, biasFieldVolume, preserveDetail, thorough,
                                     noiseMap)
        job = DenoiseJob(request, self.runner, eventCallback, self.temporaryRoot).start()
        if not waitForCompletion:
            if self.poller is not None:
                self.poller(job.poll)
            return job
        job.wait(idle=self.idle)
        if job.outputVolume is None:
            raise RuntimeError(job.errorMessage or "Denoising did not complete.")
        return job.outputVolume

    def showComparison(self, inputVolume, outputVolume, residualVolume=None) -> list:
        """Original | denoised (| residual) side by side, linked, same orientation and window/level."""
        return comparison.show_comparison(inputVolume, outputVolume, residualVolume, self.sliceLogicLookup)

    def showFade(self, inputVolume, outputVolume, opacity: float = 0.5):
        """The original under the denoised volume in one view; move the opacity to fade between them."""
        return comparison.show_fade(inputVolume, outputVolume, opacity)

    def setFadeOpacity(self, scene, opacity: float) -> None:
        comparison.set_fade_opacity(scene, opacity)

    @staticmethod
    def setActiveVolume(volumeNode) -> bool:
        """Make ``volumeNode`` the scene's active volume (selection node); False if the scene has none."""
        selection = volumeNode.GetScene().GetFirstNodeByClass("vtkMRMLSelectionNode")
        if selection is None:
            return False
        selection.SetActiveVolumeID(volumeNode.GetID())
        return True
