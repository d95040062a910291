"""Denoising files: read, run the pipeline, write the output (and bias field and residual) atomically."""

from __future__ import annotations

import contextlib
import glob
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import process_memory
from .inference import Cancelled, DeviceUnavailable, resolve_device
from .input_checks import can_correct_bias
from .io import (
    Geometry,
    InputError,
    check_image,
    check_output_path,
    image_like,
    is_stale,
    pick_volume,
    read_any_image,
    refuse_same_path,
    remove_stale,
    write_images,
)
from .model import WeightsError
from .noise import estimate_sigma_in_series
from .pipeline import STAGE_NOISE, DenoisePipeline, DenoiseResult


def denoise_file(
    input_path: Path | str,
    output_path: Path | str,
    bias_correction: bool = True,
    device: str = "auto",
    save_bias: Path | str | None = None,
    save_residual: Path | str | None = None,
    save_noise_map: Path | str | None = None,
    sigma: float | None = None,
    volume: int | None = None,
    weights: Path | str | None = None,
    pipeline: DenoisePipeline | None = None,
    reporter=None,
    preserve_detail: bool = False,
    thorough: bool = False,
    noise_map: bool = False,
) -> DenoiseResult:
    """Denoise one scan into ``output_path``; the input is only read, never written."""
    if save_bias is not None and not bias_correction:
        raise InputError("--save-bias needs bias correction: drop --no-n4")
    for extra in (output_path, save_bias, save_residual, save_noise_map):
        if extra is not None:
            refuse_same_path(input_path, extra)
            check_output_path(extra)
    sigma_given = sigma is not None
    started = time.perf_counter()
    series = read_any_image(input_path)
    image = check_image(pick_volume(series, volume), str(input_path))
    read_seconds = time.perf_counter() - started
    if save_bias is not None and not can_correct_bias(image.GetSize()):
        raise InputError(f"{input_path}: too small for N4 ({' x '.join(map(str, image.GetSize()))}), so there is no "
                         "bias field to save: drop --save-bias")
    load_seconds_before = pipeline.load_seconds if pipeline else 0.0  # in a batch the first scan loads the model
    pipeline = pipeline or DenoisePipeline.checked(weights)
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    sigma_note, series_seconds = None, 0.0
    if sigma is None and series.GetDimension() == 4:
        started_estimate = time.perf_counter()
        sigma, sigma_note = _series_sigma(series, volume)
        series_seconds = time.perf_counter() - started_estimate
    geometry = Geometry.of(image)
    del series, image  # their voxels (a long series, a large volume) need not stay in memory while it is denoised
    device = resolve_device(device)
    if reporter is not None and device.type != "cuda":  # the grouped step runs on the CPU beside MPS
        if note := process_memory.shortage_note(array.size, process_memory.available_bytes(), noise_map):
            reporter.line(f"note: {note}")
    progress = reporter.progress if reporter is not None else None
    result = pipeline.run(array, geometry.spacing, bias_correction=bias_correction, device=device,
                          sigma=sigma, progress=progress, preserve_detail=preserve_detail,
                          thorough=thorough, noise_map=noise_map)
    result.seconds[STAGE_NOISE] += series_seconds
    outputs = [(image_like(result.denoised, geometry), output_path)]
    if save_bias is not None:
        outputs.append((image_like(result.bias_field, geometry), save_bias))
    if save_residual is not None:
        outputs.append((image_like(result.residual, geometry), save_residual))
    if save_noise_map is not None:
        outputs.append((image_like(result.noise_level(), geometry), save_noise_map))
    started_write = time.perf_counter()
    write_images(outputs)
    if reporter is not None:
        for note in [*result.notes, *([sigma_note] if sigma_note else [])]:
            reporter.line(f"note: {note}")
        source = "noise sigma (given)" if sigma_given else "estimated noise sigma"
        reporter.line(f"{source}: {result.sigma:.4g} ({result.sigma_percent:.2f}% of the robust maximum)")
        timings = {"read": read_seconds, "model load": pipeline.load_seconds - load_seconds_before, **result.seconds,
                   "write": time.perf_counter() - started_write}
        reporter.line("time: " + ", ".join(f"{stage} {seconds:.2f} s" for stage, seconds in timings.items())
                      + f"; total {time.perf_counter() - started:.2f} s on {result.device}")
        reporter.line(f"wrote {output_path}" + "".join(f", {p}" for _, p in outputs[1:]))
    return result


def _series_sigma(series: sitk.Image, volume: int) -> tuple[float, str | None]:
    """The noise sigma of one volume of a 4-D series, and a note on where it came from."""
    estimates = estimate_sigma_in_series(sitk.GetArrayViewFromImage(series), volume)
    if estimates.from_series is None:
        return estimates.sigma, None
    return estimates.sigma, (f"noise sigma from this volume alone {estimates.alone:.4g}, from the differences of "
                             f"consecutive volumes {estimates.from_series:.4g}: the lower is used")


IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# Header-and-data formats, written as their one-file forms (``io.write_images`` renames one file).
DETACHED_SUFFIXES = {".mhd": ".mha", ".nhdr": ".nrrd"}


def batch_inputs(source: Path | str) -> list[Path] | None:
    """The scans of a batch, or None when ``source`` is one scan (a file or a DICOM series folder).

    A batch is a folder holding image files, or a ``.txt`` list with one path per line (blank
    lines and ``#`` comments ignored; relative paths are relative to the list's folder).

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "b.nii.gz").write_bytes(b""), (folder / "a.nrrd").write_bytes(b""), (folder / "notes.txt").write_text("")
    >>> [p.name for p in batch_inputs(folder)]
    ['a.nrrd', 'b.nii.gz']
    >>> _ = (folder / "list.txt").write_text("# scans\\nb.nii.gz\\n\\n")
    >>> [p.name for p in batch_inputs(folder / "list.txt")]
    ['b.nii.gz']
    """
    source = Path(source)
    if source.is_file() and source.suffix == ".txt":
        try:
            text = source.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the first path
        except UnicodeDecodeError as error:
            raise InputError(f"{source}: not a UTF-8 text list ({error.reason} at byte {error.start})") from None
        lines = [line.strip() for line in text.splitlines()]
        named = [source.parent / line for line in lines if line and not line.startswith("#")]
        if not named:
            raise InputError(f"{source}: the list names no scans")
        unique: dict[Path, Path] = {}  # a scan listed twice (or once relative, once absolute) is done once
        for scan in named:
            unique.setdefault(scan.resolve(), scan)
        return list(unique.values())
    if source.is_dir():
        # Names starting with a dot are hidden files, such as another run's temporary outputs.
        scans = sorted(p for p in source.iterdir()
                       if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(IMAGE_SUFFIXES))
        return scans or None
    return None


def shard(inputs: list[Path], index: int, count: int) -> list[Path]:
    """Every ``count``-th scan of the sorted batch, starting at number ``index`` (from 0).

    The ``count`` shards of a batch (the tasks of a SLURM job array, say) cover every scan
    exactly once, whatever order the list was written in.

    >>> scans = [Path(name) for name in ("d.nii", "a.nii", "c.nii", "b.nii", "e.nii")]
    >>> [[p.name for p in shard(scans, index, 2)] for index in (0, 1)]
    [['a.nii', 'c.nii', 'e.nii'], ['b.nii', 'd.nii']]
    """
    if not 0 <= index < count:
        raise InputError(f"shard {index}/{count}: the index must be from 0 to {count - 1}")
    refuse_shared_output_names(inputs)  # across shards, no task would see the clash
    return sorted(inputs)[index::count]


def output_name(scan: Path) -> str:
    """A file keeps its name, in one file (.mhd and .nhdr become .mha and .nrrd); a DICOM series
    folder becomes ``<folder>.nii.gz``.

    >>> [output_name(Path(name)) for name in ("a.nii.gz", "b.mhd", "c.nhdr", "dicom_folder")]
    ['a.nii.gz', 'b.mha', 'c.nrrd', 'dicom_folder.nii.gz']
    """
    for detached, attached in DETACHED_SUFFIXES.items():
        if scan.name.lower().endswith(detached):
            return scan.name[: -len(detached)] + attached
    return scan.name if scan.name.lower().endswith(IMAGE_SUFFIXES) else f"{scan.name}.nii.gz"


def denoise_batch(inputs: list[Path], output_dir: Path | str, pipeline: DenoisePipeline | None = None,
                  reporter=None, **options) -> dict:
    """Denoise every scan into ``output_dir``, loading the model once.

    A scan whose output already exists is skipped (outputs are written atomically, so an existing
    one is complete): a stopped batch started again carries on where it stopped. A scan that
    fails is reported and the batch goes on; what would fail every scan (no such device, damaged
    weights) or a cancel stops it. Returns the counts and the failures.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"{output_dir}: is a file; a batch needs an output folder")
    if any(scan.parent.resolve() == output_dir.resolve() for scan in inputs):
        raise InputError(f"{output_dir}: the output folder holds the inputs; pick another folder")
    refuse_shared_output_names(inputs)
    output_dir.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temporaries(output_dir, [output_name(scan) for scan in inputs])
    if removed and reporter is not None:
        reporter.line(f"removed {len(removed)} temporary file(s) that a stopped run left in {output_dir}")
    weights = options.pop("weights", None)
    pipeline = pipeline or DenoisePipeline.checked(weights)  # damaged weights would fail every scan
    summary = {"denoised": 0, "skipped": 0, "claimed": 0, "failed": []}
    for number, scan in enumerate(inputs, start=1):
        target = output_dir / output_name(scan)
        if target.exists():
            summary["skipped"] += 1
            continue
        claim = claim_scan(target)
        if claim is None:
            summary["claimed"] += 1
            continue
        if reporter is not None:
            reporter.line(f"[{number}/{len(inputs)}] {scan}")
        with held(claim):
            try:
                if target.exists():  # another process finished it between the check and the claim
                    summary["skipped"] += 1
                    continue
                denoise_file(scan, target, pipeline=pipeline, reporter=reporter, **options)
                summary["denoised"] += 1
            except InputError as error:
                summary["failed"].append(str(error))
            except (Cancelled, DeviceUnavailable, WeightsError):
                raise
            except Exception as error:  # one odd scan (say, a library's error on it) must not end a night's batch
                message = str(error).strip().splitlines()
                summary["failed"].append(f"{scan}: {type(error).__name__}" + (f": {message[0]}" if message else ""))
    return summary


def claim_scan(target: Path) -> Path | None:
    """Claim the output ``target`` for this process: the hidden file ``.<name>.claim`` beside it,
    created only if no other process holds it. Returns the claim (remove it when done), or None
    when another process is at work on this scan: batches started twice on one folder, or several
    unsharded processes on one list, share out the scans instead of doing each twice. A claim is
    kept fresh while it is ``held``; one untouched for STALE_AFTER_SECONDS is from a process that
    was killed, and is taken over (``_remove_stale_claim``): by one process when two find it stale
    at once.
    """
    claim = target.with_name(f".{target.name}.claim")
    for _ in range(2):
        try:
            handle = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if not is_stale(claim):
                    return None
            except FileNotFoundError:  # its holder just finished
                continue
            if not _remove_stale_claim(claim):
                return None
            continue
        with os.fdopen(handle, "w") as stream:
            stream.write(f"{socket.gethostname()} {os.getpid()}\n")
        return claim
    return None


def _remove_stale_claim(claim: Path) -> bool:
    """Remove ``claim``, found stale, unless it is no longer the stale one; returns False when a
    live claim is there now, True when the name is free for a new claim (which ``os.O_EXCL`` then
    gives to one process).

    Removing it by name could remove a new claim made in its place: processes A and B find it
    stale; A removes it and makes its own; B then removes A's, makes its own, and both denoise the
    scan. So it is first renamed to a name of this process's own: of several processes renaming
    one file, one succeeds, and the file it got is checked again, where no one else can touch it.
    """
    aside = claim.with_name(f"{claim.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}")
    try:
        os.rename(claim, aside)
    except FileNotFoundError:  # another process took it first
        return True
    try:
        fresh = not is_stale(aside)
    except FileNotFoundError:  # a batch starting up removed it as stale (remove_stale_temporaries)
        return True
    if fresh:
        # Not the stale claim but a live one (the claim of a process that took over first, or one
        # renewed by its holder) made between the check and the rename. Its holder is at work and
        # will remove it by name when done, so it goes back at once. A third process could claim
        # the free name in that instant (O_EXCL); putting it back over that claim then leaves two
        # processes denoising the scan into the same output, each written atomically: work done
        # twice, never a scan left unclaimed or a half-written output.
        os.replace(aside, claim)
        return False
    aside.unlink(missing_ok=True)
    return True


CLAIM_REFRESH_SECONDS = 300  # well inside STALE_AFTER_SECONDS: a claim in use never looks stale


@contextmanager
def held(claim: Path, every: float = CLAIM_REFRESH_SECONDS) -> Iterator[None]:
    """Keep ``claim`` fresh (its time of change renewed every ``every`` seconds) while the block
    runs, so that a scan that takes longer than STALE_AFTER_SECONDS is not taken over; remove it
    after."""
    done = threading.Event()

    def refresh() -> None:
        while not done.wait(every):
            with contextlib.suppress(OSError):  # removed by hand, say: the work goes on
                os.utime(claim)

    heartbeat = threading.Thread(target=refresh, name=f"claim {claim.name}", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        done.set()
        heartbeat.join()
        claim.unlink(missing_ok=True)


def refuse_shared_output_names(inputs: list[Path]) -> None:
    """Two scans of a list with one file name (sub1/T1w.nii.gz, sub2/T1w.nii.gz) would share an output."""
    first_with_name: dict[str, Path] = {}
    for scan in inputs:
        name = output_name(scan)
        if name in first_with_name:
            raise InputError(f"{first_with_name[name]} and {scan} would both be written as {name}; "
                             "give the scans distinct file names (or run them as separate batches)")
        first_with_name[name] = scan


def remove_stale_temporaries(output_dir: Path, names: list[str]) -> list[Path]:
    """Remove what a killed run left of its temporary outputs for ``names`` (the hidden
    ``.<name>.<random><suffix>`` files that ``io.write_images`` writes before renaming) and of its
    claims (``io.remove_stale``); returns what was removed."""
    return remove_stale(leftover for name in names for leftover in output_dir.glob(f".{glob.escape(name)}.*"))
