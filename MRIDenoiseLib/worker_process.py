"""Starting the worker: as a real process (Slicer's Python) or in-process (fast tests), one interface.

The caller polls: :meth:`WorkerProcess.read_lines` never blocks, :meth:`WorkerProcess.exit_code`
stays ``None`` until the worker has exited *and* every line it wrote has been read, and
:meth:`WorkerProcess.kill` stops the whole process tree.

>>> import sys
>>> runner = SubprocessRunner(module="json.tool", python=sys.executable)
>>> process = runner.start(["--help"])
>>> process.wait(timeout=60)
0
>>> any("usage" in line for line in process.read_lines())
True
"""

from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Optional, Protocol, Sequence

LIBRARY_PARENT = Path(__file__).resolve().parent.parent
WORKER_MODULE = "MRIDenoiseLib.worker"


class WorkerProcess(Protocol):
    def read_lines(self) -> list[str]: ...
    def exit_code(self) -> Optional[int]: ...
    def error_output(self) -> str: ...
    def kill(self) -> None: ...


class WorkerRunner(Protocol):
    def start(self, arguments: Sequence[str]) -> WorkerProcess: ...


class _Lines:
    """A thread-safe queue of text lines filled from a stream or by writes."""

    def __init__(self):
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()

    def put(self, line: str) -> None:
        self._queue.put(line.rstrip("\r\n"))

    def drain(self) -> list[str]:
        lines = []
        while True:
            try:
                lines.append(self._queue.get_nowait())
            except queue.Empty:
                return lines

    def pump(self, stream) -> threading.Thread:
        def read():
            for line in iter(stream.readline, ""):
                self.put(line)
            stream.close()

        thread = threading.Thread(target=read, daemon=True)
        thread.start()
        return thread


def _wait(process: WorkerProcess, timeout: float) -> Optional[int]:
    deadline = time.monotonic() + timeout
    while (code := process.exit_code()) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return code


def kill_process_tree(pid: int, group: bool = False) -> None:
    """Kill ``pid`` and everything it started; a process already gone is fine.

    psutil when installed, or ``taskkill /T`` on Windows. With ``group`` (``pid`` leads its own
    process group, as the worker does on POSIX) the whole group is killed too, which also reaches
    children whose parent already died.
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            parent = psutil.Process(pid)
            family = parent.children(recursive=True) + [parent]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=10)
    elif os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(pid)], capture_output=True, check=False)
    if group and os.name != "nt":
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class SubprocessWorker:
    """One running ``python -m <module>``; stdout and stderr are read by two daemon threads."""

    def __init__(self, command: Sequence[str], environment: Mapping[str, str]):
        options = {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)} \
            if os.name == "nt" else {"start_new_session": True}
        self.process = subprocess.Popen(
            list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", env=dict(environment), **options,
        )
        self.pid = self.process.pid
        self._out, self._err = _Lines(), _Lines()
        self._errors: list[str] = []
        self._threads = [self._out.pump(self.process.stdout), self._err.pump(self.process.stderr)]

    def read_lines(self) -> list[str]:
        return self._out.drain()

    def exit_code(self) -> Optional[int]:
        if any(thread.is_alive() for thread in self._threads):
            return None
        return self.process.wait()

    def error_output(self) -> str:
        self._errors.extend(self._err.drain())
        return "\n".join(self._errors)

    def kill(self) -> None:
        kill_process_tree(self.pid, group=os.name != "nt")
        self.process.wait()
        for thread in self._threads:
            thread.join(timeout=10)

    def wait(self, timeout: float) -> Optional[int]:
        return _wait(self, timeout)


class SubprocessRunner:
    """Runs the worker module with ``python`` (Slicer: the ``PythonSlicer`` launcher).

    ``environment`` is the base environment (Slicer: ``slicer.util.startupEnvironment()``); the
    folder holding ``MRIDenoiseLib`` is put first on ``PYTHONPATH`` and output is unbuffered.
    """

    def __init__(self, python: str | os.PathLike | None = None, environment: Optional[Mapping[str, str]] = None,
                 module: str = WORKER_MODULE, library_parent: Path = LIBRARY_PARENT):
        self.python = str(python or sys.executable)
        self.environment = dict(os.environ if environment is None else environment)
        self.module, self.library_parent = module, library_parent

    def command(self, arguments: Sequence[str]) -> list[str]:
        return [self.python, "-u", "-m", self.module, *map(str, arguments)]

    def start(self, arguments: Sequence[str]) -> SubprocessWorker:
        environment = dict(self.environment)
        paths = [str(self.library_parent)] + [p for p in environment.get("PYTHONPATH", "").split(os.pathsep) if p]
        environment["PYTHONPATH"] = os.pathsep.join(paths)
        environment["PYTHONUNBUFFERED"] = "1"
        return SubprocessWorker(self.command(arguments), environment)


class _LineWriter(io.TextIOBase):
    """A text stream that hands every complete line to a :class:`_Lines`."""

    def __init__(self, lines: _Lines):
        self._lines, self._pending = lines, ""

    def write(self, text: str) -> int:
        self._pending += text
        *complete, self._pending = self._pending.split("\n")
        for line in complete:
            self._lines.put(line)
        return len(text)


class InProcessWorker:
    """The worker's ``main`` in a thread of this process; ``kill`` asks it to stop at the next window."""

    def __init__(self, main: Callable, arguments: Sequence[str]):
        self._out = _Lines()
        self._stop = threading.Event()
        self._code: list[int] = []
        self._errors: list[str] = []

        def target():
            try:
                self._code.append(main(list(map(str, arguments)), output=_LineWriter(self._out), cancel=self._stop.is_set))
            except BaseException as error:  # a crash must still end the run
                self._errors.append(repr(error))
                self._code.append(1)

        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def read_lines(self) -> list[str]:
        return self._out.drain()

    def exit_code(self) -> Optional[int]:
        return None if self._thread.is_alive() else self._code[0]

    def error_output(self) -> str:
        return "\n".join(self._errors)

    def kill(self) -> None:
        self._stop.set()
        self._thread.join()

    def wait(self, timeout: float) -> Optional[int]:
        return _wait(self, timeout)


class InProcessRunner:
    """Runs :func:`worker.main` in a thread: no interpreter start-up, for fast tests."""

    def __init__(self, main: Optional[Callable] = None):
        if main is None:
            from .worker import main
        self.main = main

    def start(self, arguments: Sequence[str]) -> InProcessWorker:
        return InProcessWorker(self.main, arguments)
