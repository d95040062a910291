"""The line protocol between the worker process and whoever started it.

The worker prints one message per stdout line: a fixed prefix, then a JSON object. Lines without
the prefix (a library printing something) are kept as log text, so nothing the worker says is lost.

>>> line = encode(Progress("denoising", 0.25))
>>> line
'@@MRIDENOISE {"kind": "progress", "stage": "denoising", "fraction": 0.25}'
>>> decode(line)
Progress(stage='denoising', fraction=0.25)
>>> decode("some library chatter")
Log(text='some library chatter')
>>> overall_fraction("denoising", 0.5, bias_correction=True)
0.45
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Union

PREFIX = "@@MRIDENOISE "

# Stages the worker and the logic add around the pipeline's own stages (see pipeline.py).
STAGE_PREPARING = "preparing"
STAGE_LOADING = "loading result"


@dataclass(frozen=True)
class Progress:
    """``fraction`` (0..1) of ``stage`` is done."""

    stage: str
    fraction: float


@dataclass(frozen=True)
class Log:
    """A line of text for the log (notes, timings, stray library output)."""

    text: str


@dataclass(frozen=True)
class Finished:
    """The outputs are written; ``summary`` holds sigma, sigma_percent, device, seconds and notes."""

    summary: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Failed:
    """The run stopped; ``message`` is one line for the user, ``details`` the full traceback if any."""

    message: str
    details: str = ""


Message = Union[Progress, Log, Finished, Failed]
_KINDS = {"progress": Progress, "log": Log, "finished": Finished, "failed": Failed}
_NAMES = {cls: name for name, cls in _KINDS.items()}


def encode(message: Message) -> str:
    """One line (no newline) that :func:`decode` turns back into ``message``."""
    return PREFIX + json.dumps({"kind": _NAMES[type(message)], **asdict(message)})


def decode(line: str) -> Message:
    """The message a line holds; any other line, malformed ones included, becomes :class:`Log`.

    >>> decode('@@MRIDENOISE {"kind": "failed", "message": "no such file"}')
    Failed(message='no such file', details='')
    >>> decode('@@MRIDENOISE {"kind": "progress", "stage": 3')
    Log(text='@@MRIDENOISE {"kind": "progress", "stage": 3')
    """
    line = line.rstrip("\r\n")
    if not line.startswith(PREFIX):
        return Log(line)
    try:
        values = json.loads(line[len(PREFIX):])
        kind = _KINDS[values.pop("kind")]
        return kind(**values)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Log(line)


# Share of the whole run each stage takes, in order; the pipeline stages' names come from pipeline.py.
_WEIGHTS_WITH_N4 = (("preparing", 0.05), ("noise estimate", 0.05), ("denoising", 0.70),
                    ("bias correction", 0.15), ("loading result", 0.05))
_WEIGHTS_WITHOUT_N4 = (("preparing", 0.05), ("noise estimate", 0.05), ("denoising", 0.85),
                       ("loading result", 0.05))


def overall_fraction(stage: str, fraction: float, bias_correction: bool = True) -> float:
    """How much of the whole run is done when ``fraction`` of ``stage`` is: for one progress bar.

    >>> overall_fraction("preparing", 0.0), overall_fraction("loading result", 1.0, bias_correction=False)
    (0.0, 1.0)
    >>> overall_fraction("unknown stage", 0.3)
    Traceback (most recent call last):
    ...
    ValueError: unknown stage 'unknown stage'
    """
    done = 0.0
    for name, weight in _WEIGHTS_WITH_N4 if bias_correction else _WEIGHTS_WITHOUT_N4:
        if name == stage:
            return round(done + weight * min(max(fraction, 0.0), 1.0), 6)
        done += weight
    raise ValueError(f"unknown stage {stage!r}")
