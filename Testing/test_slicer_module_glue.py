"""The module file's logic subclass, imported with stand-ins for the Qt-only parts of Slicer.

slicer-core has no qt, slicer.app, ScriptedLoadableModule or parameterNodeWrapper; minimal stand-ins
take their place so that MRIDenoise.py's own code runs: its logic subclass, its QTimer poller (driven
by hand), its dependency check in testing mode and its choice of the worker's interpreter.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from conftest import phantom
from test_slicer_scene import SlicerLikeScene, ijk_to_ras, slicer

from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic as CoreLogic
from MRIDenoiseLib.worker_process import InProcessRunner

MODULE_FILE = Path(__file__).resolve().parents[1] / "MRIDenoise" / "MRIDenoise.py"


class FakeSignal:
    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)


class FakeTimer:
    """qt.QTimer as far as the module uses it; tests fire it by hand."""

    live = []

    def __init__(self):
        self.timeout, self.interval, self.active = FakeSignal(), None, False

    def setInterval(self, milliseconds):
        self.interval = milliseconds

    def start(self):
        self.active = True
        FakeTimer.live.append(self)

    def stop(self):
        self.active = False
        FakeTimer.live.remove(self)

    @classmethod
    def fire_all(cls):
        for timer in list(cls.live):
            for slot in timer.timeout.slots:
                slot()


class FakeApp:
    def __init__(self, laid):
        self.laid, self.events = laid, 0

    def applicationLogic(self):
        return self.laid.applicationLogic

    def processEvents(self):
        self.events += 1

    def testingEnabled(self):
        return True

    def applicationFilePath(self):
        return "/opt/Slicer/bin/SlicerApp-real"


class Base:
    def __init__(self, *args, **kwargs):
        pass


class ScriptedLogicBase:
    def __init__(self, parent=None):
        self.parameterNode = "the parameter node"

    def getParameterNode(self):
        return self.parameterNode


def wrap_parameter_node(cls):
    """Like parameterNodeWrapper: a class built around a parameter node, with the typed defaults."""
    return type(cls.__name__, (cls,), {"__init__": lambda self, node: setattr(self, "parameterNode", node)})


@pytest.fixture
def module(monkeypatch):
    laid = SlicerLikeScene()
    FakeTimer.live = []
    monkeypatch.setitem(sys.modules, "qt", types.SimpleNamespace(QTimer=FakeTimer))
    monkeypatch.setitem(sys.modules, "slicer.i18n",
                        types.SimpleNamespace(tr=lambda text: text, translate=lambda context, text: text))
    monkeypatch.setitem(sys.modules, "slicer.parameterNodeWrapper", types.SimpleNamespace(
        parameterNodeWrapper=wrap_parameter_node, Choice=lambda choices: None, WithinRange=lambda low, high: None))
    monkeypatch.setitem(sys.modules, "slicer.ScriptedLoadableModule", types.SimpleNamespace(
        ScriptedLoadableModule=Base, ScriptedLoadableModuleWidget=Base, ScriptedLoadableModuleTest=Base,
        ScriptedLoadableModuleLogic=ScriptedLogicBase))
    monkeypatch.setattr(slicer, "app", FakeApp(laid), raising=False)
    monkeypatch.setattr(slicer.util, "startupEnvironment", lambda: {"PATH": "/usr/bin", "STARTUP": "1"}, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no PythonSlicer on PATH: the one beside the application is used
    spec = importlib.util.spec_from_file_location("MRIDenoise", MODULE_FILE)
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    loaded.laid = laid
    return loaded


def test_module_logic_is_the_lib_logic_with_slicer_runner_and_lookup(module):
    logic = module.MRIDenoiseLogic()
    assert isinstance(logic, CoreLogic)
    assert logic.runner.python == os.path.join("/opt/Slicer/bin", "PythonSlicer")
    assert logic.runner.environment == {"PATH": "/usr/bin", "STARTUP": "1"}
    assert logic.sliceLogicLookup("Yellow") is module.laid.sliceLogics["Yellow"]
    assert module.DEVICE_BY_LABEL == {"Auto": "auto", "GPU": "gpu", "CPU": "cpu"}
    assert set(module.DEVICE_BY_LABEL.values()) <= set(__import__("MRIDenoiseLib.slicer_logic").slicer_logic.DEVICES)


def test_asynchronous_run_is_polled_by_the_timer_until_done(module, tiny_weights, tmp_path):
    logic = module.MRIDenoiseLogic()
    logic.runner, logic.weights, logic.temporaryRoot = InProcessRunner(), str(tiny_weights), str(tmp_path)
    source = module.laid.addVolume(phantom((16, 20, 18)))
    events = []
    job = logic.process(source, biasCorrection=False, waitForCompletion=False, eventCallback=events.append)
    assert len(FakeTimer.live) == 1 and FakeTimer.live[0].interval == 100
    for _ in range(3000):
        if not FakeTimer.live:
            break
        FakeTimer.fire_all()
        time.sleep(0.01)
    assert FakeTimer.live == []  # the timer stopped itself when the job ended
    assert job.outputVolume is not None and events[-1].kind == "completed"
    assert np.array_equal(ijk_to_ras(job.outputVolume), ijk_to_ras(source))
    assert list(tmp_path.iterdir()) == []


def test_blocking_run_keeps_processing_gui_events(module, tiny_weights, tmp_path):
    logic = module.MRIDenoiseLogic()
    logic.runner, logic.weights, logic.temporaryRoot = InProcessRunner(), str(tiny_weights), str(tmp_path)
    source = module.laid.addVolume(phantom((16, 20, 18)))
    output = logic.process(source, biasCorrection=False)
    assert output.GetName() == "Phantom denoised"
    assert slicer.app.events > 0


def test_missing_packages_are_never_installed_in_testing_mode(module, monkeypatch):
    import MRIDenoiseLib.slicer_dependencies as dependencies

    logic = module.MRIDenoiseLogic()
    assert logic.ensureDependencies() is True  # this environment has them all
    monkeypatch.setattr(dependencies, "REQUIREMENTS", ("monai>=1.4", "surely-not-installed-package>=1"))
    installs = []
    monkeypatch.setattr(slicer.util, "pip_install", installs.append, raising=False)
    with pytest.raises(RuntimeError, match="surely-not-installed-package>=1"):
        logic.ensureDependencies()
    assert installs == []


def test_parameter_node_and_widget_classes_exist(module):
    wrapped = module.MRIDenoiseLogic().getParameterNode()
    assert isinstance(wrapped, module.MRIDenoiseParameterNode) and wrapped.parameterNode == "the parameter node"
    assert (wrapped.biasCorrection, wrapped.device, wrapped.fadeOpacity, wrapped.createResidual) == (True, "Auto", 0.5, False)
    assert {"MRIDenoise", "MRIDenoiseWidget", "MRIDenoiseTest"} <= set(vars(module))
