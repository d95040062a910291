"""MRI Denoise: Slicer glue only. The work is done by MRIDenoiseLib (no Qt) in a worker process."""

import logging
import os
import shutil
from typing import Annotated

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic as MRIDenoiseCoreLogic

README_URL = "https://github.com/mridenoise/SlicerMRIDenoise#readme"
DEVICE_BY_LABEL = {"Auto": "auto", "GPU": "gpu", "CPU": "cpu"}


class MRIDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MRI Denoise")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering.Denoising")]
        self.parent.dependencies = []
        self.parent.contributors = ["MRIDenoise contributors"]
        self.parent.helpText = _(
            "Removes Rician noise from MRI volumes (a grouped Wiener filter, or a bundled neural network that "
            "keeps faint detail; no download), optionally "
            "followed by N4 bias correction, and shows the original and the result side by side. "
            'See the <a href="{url}">README</a> for scripting and batch use.').format(url=README_URL)
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, PyTorch, MONAI and SimpleITK (N4). The comparison view follows pieper/CompareVolumes.")


@parameterNodeWrapper
class MRIDenoiseParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    biasCorrection: bool = True
    preserveDetail: bool = False
    thorough: bool = False
    noiseMap: bool = False
    device: Annotated[str, Choice(["Auto", "GPU", "CPU"])] = "Auto"
    createResidual: bool = False
    createBiasField: bool = False
    fadeOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


class MRIDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.job = None
        self.lastResults = {}  # "residual" / "bias field" -> node: a rerun on the same input replaces them
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MRIDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MRIDenoiseLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.fadeButton.connect("clicked(bool)", self.onFadeButton)
        self.ui.fadeSlider.connect("valueChanged(double)", self.onFadeOpacity)
        self.ui.progressBar.hide()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self.job is not None:
            self.job.cancel()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        if self.job is not None:
            self.job.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onReload(self) -> None:
        """Reload the Lib too (Python 3.12 has no imp): importlib over the package's loaded modules."""
        import importlib
        import sys

        for name in sorted(n for n in list(sys.modules) if n == "MRIDenoiseLib" or n.startswith("MRIDenoiseLib.")):
            importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        node = self._parameterNode
        running = self.job is not None and self.job.isRunning
        ready = bool(node and node.inputVolume and node.outputVolume is not node.inputVolume)
        self.ui.applyButton.enabled = running or ready
        self.ui.applyButton.text = _("Cancel") if running else _("Denoise")
        self.ui.applyButton.toolTip = _("Stop the running denoising") if running else (
            _("Denoise the input volume") if ready else _("Select an input volume (and an output other than the input)"))

    def onApplyButton(self) -> None:
        if self.job is not None and self.job.isRunning:
            self.job.cancel()
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Denoising could not start."), waitCursor=True):
            if not self.logic.ensureDependencies():
                return
            self.ui.progressBar.value = 0
            self.ui.progressBar.show()

            def reused(kind, wanted):
                return self.logic.reusableResult(self.lastResults.get(kind), node.inputVolume, kind) if wanted else None

            self.job = self.logic.process(
                node.inputVolume, node.outputVolume, biasCorrection=node.biasCorrection,
                device=DEVICE_BY_LABEL[node.device], createResidual=node.createResidual,
                createBiasField=node.createBiasField, residualVolume=reused("residual", node.createResidual),
                biasFieldVolume=reused("bias field", node.createBiasField),
                waitForCompletion=False, eventCallback=self.onJobEvent, preserveDetail=node.preserveDetail,
                thorough=node.thorough, noiseMap=node.noiseMap)
        self._checkCanApply()

    def onJobEvent(self, event) -> None:
        if event.kind == "progress":
            self.ui.progressBar.value = round(100 * event.overall)
            self.ui.statusLabel.text = _("{stage}…").format(stage=event.stage.capitalize())
            return
        if event.kind == "log":
            logging.info(event.message)
            return
        self.ui.progressBar.hide()
        self.ui.statusLabel.text = event.message
        self.job, job = None, event.job
        self._checkCanApply()
        if event.kind == "failed":
            slicer.util.errorDisplay(_("Denoising failed: {reason}").format(reason=event.message),
                                     detailedText=job.errorDetails or None)
        elif event.kind == "completed":
            self._parameterNode.outputVolume = job.outputVolume
            made = {"residual": job.residualVolume, "bias field": job.biasFieldVolume}
            self.lastResults.update({kind: volume for kind, volume in made.items() if volume is not None})
            self.logic.showComparison(job.request.inputVolume, job.outputVolume, job.residualVolume)
            self.logic.selectInDataTree(job.outputVolume)

    def onCompareButton(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot show the comparison."), waitCursor=True):
            if not (node.inputVolume and node.outputVolume):
                raise ValueError(_("Denoise first, or select an input and an output volume."))
            self.logic.showComparison(node.inputVolume, node.outputVolume)

    def onFadeButton(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot show the fade."), waitCursor=True):
            if not (node.inputVolume and node.outputVolume):
                raise ValueError(_("Denoise first, or select an input and an output volume."))
            self.logic.showFade(node.inputVolume, node.outputVolume, node.fadeOpacity)

    def onFadeOpacity(self, value) -> None:
        self.logic.setFadeOpacity(slicer.mrmlScene, value)


def pythonSlicerExecutable() -> str:
    """Slicer's own Python launcher, which sets up the environment the worker needs."""
    name = "PythonSlicer.exe" if os.name == "nt" else "PythonSlicer"
    return shutil.which(name) or os.path.join(os.path.dirname(slicer.app.applicationFilePath()), name)


class MRIDenoiseLogic(ScriptedLoadableModuleLogic, MRIDenoiseCoreLogic):
    """The Lib's logic with Slicer's runner (PythonSlicer), a QTimer poller and dependency installs.

    Scripting: ``slicer.util.getModuleLogic("MRIDenoise").process(volume)`` (see the README).
    """

    def __init__(self) -> None:
        from MRIDenoiseLib.worker_process import SubprocessRunner

        ScriptedLoadableModuleLogic.__init__(self)
        runner = SubprocessRunner(python=pythonSlicerExecutable(), environment=slicer.util.startupEnvironment())
        MRIDenoiseCoreLogic.__init__(self, runner=runner, poller=self._pollWithTimer,
                                     sliceLogicLookup=slicer.app.applicationLogic().GetSliceLogicByLayoutName)
        self.idle = slicer.app.processEvents
        self._timers = []

    def getParameterNode(self):
        return MRIDenoiseParameterNode(super().getParameterNode())

    def _pollWithTimer(self, step) -> None:
        timer = qt.QTimer()
        timer.setInterval(100)

        def tick():
            if not step():
                timer.stop()
                self._timers.remove(timer)

        timer.timeout.connect(tick)
        self._timers.append(timer)
        timer.start()

    def process(self, inputVolume, *args, **kwargs):
        if not self.ensureDependencies():
            raise RuntimeError("MRIDenoise needs PyTorch and MONAI; installation was declined.")
        return MRIDenoiseCoreLogic.process(self, inputVolume, *args, **kwargs)

    def ensureDependencies(self) -> bool:
        """Install what the worker needs on first use, after asking; never in testing mode, never SimpleITK."""
        from MRIDenoiseLib.slicer_dependencies import REQUIREMENTS, TORCH_REQUIREMENT, missing_requirements

        missing = missing_requirements([TORCH_REQUIREMENT, *REQUIREMENTS])
        if not missing:
            return True
        if slicer.app.testingEnabled():
            raise RuntimeError(f"Missing Python packages in testing mode (not installed automatically): {', '.join(missing)}")
        if not slicer.util.confirmOkCancelDisplay(
                _("MRI Denoise needs these Python packages, which will be downloaded and installed now "
                  "(this can take several minutes):\n{packages}").format(packages="\n".join(missing))):
            return False
        with slicer.util.WaitCursor():
            if TORCH_REQUIREMENT in missing:
                try:
                    import PyTorchUtils
                except ImportError as error:
                    raise RuntimeError("Install the PyTorch extension from the Extensions Manager first.") from error
                installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT[5:])
                if installed is None:
                    raise RuntimeError("PyTorch could not be installed; see the PyTorch Utils module.")
            others = [req for req in missing if req != TORCH_REQUIREMENT]
            if others:
                if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):  # Slicer 5.12+
                    from packaging.requirements import Requirement

                    slicer.packaging.pip_ensure([Requirement(req) for req in others], prompt_install=False,
                                                requester="MRIDenoise")
                else:
                    slicer.util.pip_install(others)
        return True

    def selectInDataTree(self, volumeNode) -> None:
        """Make ``volumeNode`` the active volume and the current item of the subject hierarchy (Data module)."""
        self.setActiveVolume(volumeNode)
        shNode = slicer.mrmlScene.GetSubjectHierarchyNode()
        itemID = shNode.GetItemByDataNode(volumeNode)
        try:
            slicer.qSlicerSubjectHierarchyPluginHandler.instance().setCurrentItem(itemID)
        except AttributeError:  # older Slicer
            logging.debug("subject hierarchy selection is not available")


class MRIDenoiseTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: ``Slicer --testing --python-code "slicer.util.selfTest('MRIDenoise')"``."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DenoiseMRHeadWithN4AndCompare()

    def test_DenoiseMRHeadWithN4AndCompare(self):
        import numpy as np
        import SampleData

        self.delayDisplay("Loading MRHead")
        inputVolume = SampleData.downloadSample("MRHead")
        before = slicer.util.arrayFromVolume(inputVolume).copy()
        logic = MRIDenoiseLogic()
        events = []
        self.delayDisplay("Denoising with N4 (worker process)")
        outputVolume = logic.process(inputVolume, biasCorrection=True, createResidual=True, eventCallback=events.append)
        self.assertIsNotNone(outputVolume)
        self.assertEqual(outputVolume.GetName(), "MRHead denoised")
        self.assertEqual(slicer.util.arrayFromVolume(outputVolume).shape, before.shape)
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(inputVolume), before))
        inputMatrix, outputMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        inputVolume.GetIJKToRASMatrix(inputMatrix)
        outputVolume.GetIJKToRASMatrix(outputMatrix)
        for i in range(4):
            for j in range(4):
                self.assertEqual(inputMatrix.GetElement(i, j), outputMatrix.GetElement(i, j))
        self.assertEqual(events[-1].kind, "completed")
        residual = slicer.mrmlScene.GetFirstNodeByName("MRHead residual")
        logic.showComparison(inputVolume, outputVolume, residual)
        layoutManager = slicer.app.layoutManager()
        self.assertEqual(layoutManager.layout, slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLLayoutNode").GetViewArrangement())
        for name, volume in (("Red", inputVolume), ("Yellow", outputVolume), ("Green", residual)):
            composite = layoutManager.sliceWidget(name).mrmlSliceCompositeNode()
            self.assertEqual(composite.GetBackgroundVolumeID(), volume.GetID())
            self.assertTrue(composite.GetLinkedControl())
        self.delayDisplay("Test passed")
