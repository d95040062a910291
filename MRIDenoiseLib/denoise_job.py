"""One denoising run of a volume node: temporary input file, worker, progress, result nodes, cleanup.

The job is polled from the thread that owns the scene (a QTimer in Slicer, a loop in
:meth:`DenoiseJob.wait`): only :meth:`DenoiseJob.poll` touches MRML, the worker runs elsewhere.
Result nodes are created only once every result file has been read (and removed again if filling
them fails), so a failed or cancelled run adds no node, and the temporary folder is removed
whatever happens.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import progress_protocol as protocol
from .node_files import read_image_data, write_volume_node
from .worker_process import WorkerProcess, WorkerRunner

LOG = logging.getLogger("MRIDenoise")

RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
ATTRIBUTE_PREFIX = "MRIDenoise."


@dataclass
class DenoiseRequest:
    """What to denoise and which outputs to make; nodes given for outputs are reused, not replaced."""

    inputVolume: Any
    outputVolume: Any = None
    biasCorrection: bool = True
    device: str = "auto"
    createResidual: bool = False
    createBiasField: bool = False
    residualVolume: Any = None
    biasFieldVolume: Any = None
    weights: Optional[str] = None
    preserveDetail: bool = False
    thorough: bool = False
    noiseMap: bool = False

    def outputs(self) -> dict[str, Any]:
        """Result name -> node to reuse (or None: create), for the results asked for."""
        wanted = {"output": self.outputVolume}
        if self.createResidual or self.residualVolume is not None:
            wanted["residual"] = self.residualVolume
        if self.createBiasField or self.biasFieldVolume is not None:
            wanted["bias field"] = self.biasFieldVolume
        return wanted


@dataclass
class DenoiseEvent:
    """What the job tells its callback: ``kind`` is progress, log, completed, failed or cancelled."""

    kind: str
    job: "DenoiseJob"
    stage: str = ""
    fraction: float = 0.0
    overall: float = 0.0
    message: str = ""


def summary_text(summary: dict, seconds: float) -> str:
    """The status line shown at the end.

    >>> summary_text({"sigma": 4.2, "sigma_percent": 2.345, "device": "cpu", "notes": []}, 12.34)
    'Done in 12.3 s on cpu. Estimated noise: 2.35% of the robust maximum (sigma 4.2).'
    >>> summary_text({"sigma": 4.2, "sigma_percent": 2.3, "device": "cpu",
    ...               "notes": ["GPU out of memory (OutOfMemoryError); running on the CPU"]}, 80).split(". ")[-1]
    'GPU out of memory (OutOfMemoryError); running on the CPU'
    """
    text = (f"Done in {seconds:.1f} s on {summary.get('device', '?')}. Estimated noise: "
            f"{summary.get('sigma_percent', float('nan')):.2f}% of the robust maximum "
            f"(sigma {summary.get('sigma', float('nan')):.3g}).")
    return " ".join([text, *summary.get("notes", [])])


@dataclass
class DenoiseJob:
    request: DenoiseRequest
    runner: WorkerRunner
    eventCallback: Optional[Callable[[DenoiseEvent], None]] = None
    temporaryRoot: Optional[str] = None
    state: str = RUNNING
    summary: dict = field(default_factory=dict)
    errorMessage: str = ""
    errorDetails: str = ""
    outputVolume: Any = None
    residualVolume: Any = None
    biasFieldVolume: Any = None
    logLines: list = field(default_factory=list)
    _folder: Optional[Path] = field(default=None, init=False, repr=False)
    _process: Optional[WorkerProcess] = field(default=None, init=False, repr=False)
    _started: float = field(default=0.0, init=False, repr=False)
    _ended: Optional[float] = field(default=None, init=False, repr=False)
    _overall: float = field(default=0.0, init=False, repr=False)

    def start(self) -> "DenoiseJob":
        """Write the input to a temporary folder and start the worker (call once)."""
        self._started = time.perf_counter()
        self._folder = Path(tempfile.mkdtemp(prefix="MRIDenoise-", dir=self.temporaryRoot))
        try:
            self._progress(protocol.STAGE_PREPARING, 0.0)
            if self.state != RUNNING:  # the callback cancelled the job
                return self
            write_volume_node(self.request.inputVolume, self._folder / "input.nrrd")
            self._process = self.runner.start(self._arguments())
        except Exception as error:
            self._fail(str(error) or type(error).__name__, repr(error))
            raise
        return self

    @property
    def temporaryFolder(self) -> Optional[Path]:
        return self._folder

    @property
    def workerProcess(self) -> Optional[WorkerProcess]:
        return self._process

    @property
    def isRunning(self) -> bool:
        return self.state == RUNNING

    @property
    def elapsedSeconds(self) -> float:
        return (self._ended or time.perf_counter()) - self._started

    def _arguments(self) -> list[str]:
        folder, request = self._folder, self.request
        arguments = [folder / "input.nrrd", folder / "output.nrrd", "--device", request.device]
        wanted = request.outputs()
        if "residual" in wanted:
            arguments += ["--residual", folder / "residual.nrrd"]
        if "bias field" in wanted:
            arguments += ["--bias-field", folder / "bias field.nrrd"]
        if not request.biasCorrection:
            arguments.append("--no-n4")
        if request.preserveDetail:
            arguments.append("--preserve-detail")
        if request.thorough:
            arguments.append("--thorough")
        if request.noiseMap:
            arguments.append("--noise-map")
        if request.weights:
            arguments += ["--weights", request.weights]
        return [str(argument) for argument in arguments]

    def _emit(self, kind: str, **values) -> None:
        if self.eventCallback is None:
            return
        try:
            self.eventCallback(DenoiseEvent(kind, self, **values))
        except Exception:  # a broken callback must not leave the worker running unwatched
            LOG.exception("MRIDenoise: the event callback failed on a %s event", kind)

    def _progress(self, stage: str, fraction: float) -> None:
        try:
            self._overall = protocol.overall_fraction(stage, fraction, self.request.biasCorrection)
        except ValueError:  # a stage this version does not know: keep the bar where it is
            pass
        self._emit("progress", stage=stage, fraction=fraction, overall=self._overall)

    def poll(self) -> bool:
        """Handle what the worker said since the last call; returns True while the job runs."""
        if self.state != RUNNING:
            return False
        for line in self._process.read_lines():
            message = protocol.decode(line)
            if isinstance(message, protocol.Progress):
                self._progress(message.stage, message.fraction)
            elif isinstance(message, protocol.Log):
                self.logLines.append(message.text)
                self._emit("log", message=message.text)
            elif isinstance(message, protocol.Finished):
                self.summary = message.summary
            elif isinstance(message, protocol.Failed):
                self.errorMessage, self.errorDetails = message.message, message.details
            if self.state != RUNNING:  # the callback cancelled the job
                return False
        code = self._process.exit_code()
        if code is None:
            return True
        if code == 0 and self.summary:
            self._load_results()
        else:
            stderr = self._process.error_output()
            self._fail(self.errorMessage or f"the worker stopped unexpectedly (exit status {code})",
                       "\n".join(filter(None, [self.errorDetails, stderr])))
        return False

    def wait(self, interval: float = 0.05, idle: Optional[Callable[[], None]] = None) -> "DenoiseJob":
        """Poll until the job ends; ``idle`` runs between polls (Slicer: process GUI events)."""
        while self.poll():
            if idle is not None:
                idle()
            time.sleep(interval)
        return self

    def cancel(self) -> None:
        """Kill the worker and its children, remove the temporary files; the scene is left as it was."""
        if self.state != RUNNING:
            return
        if self._process is not None:
            self._process.kill()
        self.state = CANCELLED
        self._cleanup()
        self._emit("cancelled", message="Cancelled.")

    def _fail(self, message: str, details: str = "") -> None:
        if self._folder is not None:  # the worker names its files; the user knows the volume
            message = message.replace(str(self._folder / "input.nrrd"), self.request.inputVolume.GetName())
        self.state, self.errorMessage, self.errorDetails = FAILED, message, details
        LOG.error("MRIDenoise failed: %s\n%s", message, details)
        self._cleanup()
        self._emit("failed", message=message)

    def _cleanup(self) -> None:
        self._ended = time.perf_counter()
        shutil.rmtree(self._folder, ignore_errors=True)

    def _load_results(self) -> None:
        self._progress(protocol.STAGE_LOADING, 0.0)
        if self.state != RUNNING:  # the callback cancelled the job
            return
        try:
            images = {name: read_image_data(self._folder / f"{name}.nrrd") for name in self.request.outputs()}
        except Exception as error:
            self._fail(str(error), repr(error))
            return
        source = self.request.inputVolume
        scene = source.GetScene()
        gone = [node.GetName() for node in (source, *self.request.outputs().values())
                if node is not None and (scene is None or node.GetScene() is not scene)]
        if gone:
            self._fail(f"{', '.join(gone)} left the scene during denoising; no result was added.")
            return
        nodes, created = {}, []
        try:
            for name, node in self.request.outputs().items():
                if node is None:
                    label = f"{source.GetName()} {'denoised' if name == 'output' else name}"
                    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(label))
                    created.append(node)
                nodes[name] = self._fill_result_node(node, source, name, images[name])
        except Exception as error:  # poll() runs on a timer: it must end the job, never raise
            for node in created:
                scene.RemoveNode(node)
            self._fail(f"the results could not be added to the scene ({error})", repr(error))
            return
        self.outputVolume = nodes["output"]
        self.residualVolume = nodes.get("residual")
        self.biasFieldVolume = nodes.get("bias field")
        self.state = COMPLETED
        self._cleanup()
        self._progress(protocol.STAGE_LOADING, 1.0)
        self._emit("completed", message=summary_text(self.summary, self.elapsedSeconds))

    def _fill_result_node(self, node, source, name: str, image):
        """Put ``image`` into ``node`` with ``source``'s geometry and the run's attributes."""
        wasModifying = node.StartModify()
        node.SetAndObserveImageData(image)
        node.CopyOrientation(source)
        node.SetAndObserveTransformNodeID(source.GetTransformNodeID())
        node.SetAttribute(ATTRIBUTE_PREFIX + "source", source.GetID())
        node.SetAttribute(ATTRIBUTE_PREFIX + "kind", name)
        for key in ("sigma", "sigma_percent", "device"):
            if key in self.summary:
                node.SetAttribute(ATTRIBUTE_PREFIX + key, str(self.summary[key]))
        node.EndModify(wasModifying)
        if node.GetDisplayNode() is None:
            node.CreateDefaultDisplayNodes()
        return node
