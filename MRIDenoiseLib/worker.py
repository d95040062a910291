"""The process Slicer starts to denoise one volume: file in, protocol lines out, files back.

    python -m MRIDenoiseLib.worker INPUT OUTPUT [--residual PATH] [--bias-field PATH]
                                   [--no-n4] [--preserve-detail] [--thorough] [--noise-map]
                                   [--device auto|gpu|cuda|mps|cpu] [--weights PATH]

Every stdout line is a :mod:`progress_protocol` message. Exit status: 0 done, 2 a problem the user
can fix (bad input, missing weights, no such device; one ``Failed`` line says which), 1 anything
else (``Failed`` with the traceback in ``details``), 130 cancelled (only when run in-process).
Outputs are written atomically by :func:`batch.denoise_file`, so a killed worker leaves none.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Optional, TextIO

from .progress_protocol import STAGE_PREPARING, Failed, Finished, Log, Message, Progress, encode

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_CANCELLED = 0, 1, 2, 130
DEVICES = ("auto", "gpu", "cuda", "mps", "cpu")


class ProtocolReporter:
    """The reporter :func:`batch.denoise_file` talks to, writing protocol lines.

    Progress is sent when the stage changes or the fraction moves by at least ``step``, and
    ``cancel`` is checked on every call, so an in-process run stops inside the sliding window.

    >>> import io
    >>> out = io.StringIO()
    >>> reporter = ProtocolReporter(out)
    >>> for f in (0.0, 0.001, 0.5, 1.0): reporter.progress("denoising", f)
    >>> len(out.getvalue().splitlines())
    3
    """

    def __init__(self, output: TextIO, cancel: Optional[Callable[[], bool]] = None, step: float = 0.01):
        self.output, self.cancel, self.step = output, cancel, step
        self._last: tuple[str, float] | None = None

    def send(self, message: Message) -> None:
        self.output.write(encode(message) + "\n")
        self.output.flush()

    def line(self, text: str) -> None:
        self.send(Log(text))

    def progress(self, stage: str, fraction: float) -> None:
        if self.cancel is not None and self.cancel():
            from .inference import Cancelled

            raise Cancelled()
        last = self._last
        if last is None or last[0] != stage or abs(fraction - last[1]) >= self.step or fraction >= 1.0 > last[1]:
            self._last = (stage, fraction)
            self.send(Progress(stage, round(float(fraction), 4)))


def resolve_device_name(name: str) -> str:
    """``gpu`` means whichever GPU this machine has (CUDA, else Apple MPS); other names pass through.

    >>> resolve_device_name("cpu")
    'cpu'
    """
    if name != "gpu":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    from .inference import DeviceUnavailable

    raise DeviceUnavailable("a GPU was asked for but this machine has none that PyTorch can use; choose CPU or Auto")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m MRIDenoiseLib.worker", description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--residual", help="also write input minus denoised here")
    parser.add_argument("--bias-field", help="also write the N4 bias field here")
    parser.add_argument("--no-n4", action="store_true", help="skip N4 bias correction")
    parser.add_argument("--preserve-detail", action="store_true", help="give back each 3x3x3 neighbourhood's lost mean")
    parser.add_argument("--thorough", action="store_true", help="search wider for the groups of similar 4x4x4 windows")
    parser.add_argument("--noise-map", action="store_true", help="denoise against a map of a noise level that varies")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--weights", help="weights file (default: the bundled ones)")
    return parser


def run(args: argparse.Namespace, reporter: ProtocolReporter) -> dict:
    """Denoise ``args.input`` into the output files; returns the summary sent with ``Finished``."""
    reporter.progress(STAGE_PREPARING, 0.0)
    from .batch import denoise_file
    from .pipeline import DenoisePipeline

    device = resolve_device_name(args.device)
    pipeline = DenoisePipeline.checked(args.weights, load=args.preserve_detail)  # while preparing
    reporter.progress(STAGE_PREPARING, 1.0)
    result = denoise_file(
        args.input, args.output, bias_correction=not args.no_n4, device=device,
        save_bias=args.bias_field, save_residual=args.residual, pipeline=pipeline, reporter=reporter,
        preserve_detail=args.preserve_detail, thorough=args.thorough, noise_map=args.noise_map,
    )
    return {"sigma": result.sigma, "sigma_percent": result.sigma_percent, "device": result.device,
            "seconds": {"model load": pipeline.load_seconds, **result.seconds}, "notes": list(result.notes)}


def main(argv: list[str] | None = None, output: TextIO | None = None,
         cancel: Optional[Callable[[], bool]] = None) -> int:
    """Run the worker; ``output`` and ``cancel`` let a test run it in-process."""
    reporter = ProtocolReporter(output or sys.stdout, cancel)
    args = build_parser().parse_args(argv)
    from .inference import Cancelled, DeviceUnavailable
    from .io import InputError
    from .model import WeightsError

    try:
        summary = run(args, reporter)
    except Cancelled:
        reporter.send(Failed("cancelled"))
        return EXIT_CANCELLED
    except (InputError, WeightsError, DeviceUnavailable) as error:
        reporter.send(Failed(str(error)))
        return EXIT_USER
    except Exception as error:  # the message goes to the user, the traceback to the log
        details = traceback.format_exc()
        print(details, file=sys.stderr, flush=True)
        reporter.send(Failed(f"{type(error).__name__}: {error}".splitlines()[0], details))
        return EXIT_INTERNAL
    reporter.send(Finished(summary))
    return EXIT_OK


if __name__ == "__main__":
    from .process_memory import reuse_freed_memory

    reuse_freed_memory()
    sys.exit(main())
