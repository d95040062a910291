"""Reading and writing volumes with their geometry; checks that turn bad input into one clear line.

Any format SimpleITK reads is accepted (NIfTI, NRRD, MHA, a DICOM series folder). Writes go to a
temporary file in the destination folder and are renamed into place, so a failed or cancelled run
never leaves a half-written output.

>>> import tempfile, pathlib, numpy as np, SimpleITK as sitk
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> image = sitk.GetImageFromArray(np.arange(120, dtype=np.float32).reshape(4, 5, 6))
>>> image.SetSpacing((1.0, 2.0, 3.0))
>>> write_image(image, folder / "a.nii.gz")
>>> read_image(folder / "a.nii.gz").GetSpacing()
(1.0, 2.0, 3.0)
"""

from __future__ import annotations

import gzip
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .input_checks import InputError, check_voxels


def _read_dicom_series(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise InputError(f"{folder}: folder holds no DICOM series")
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    return reader.Execute()


def _check_gzip_complete(path: Path) -> None:
    """ITK fills a truncated .gz with zeros without a word; gzip itself notices."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 22):
                pass
    except (OSError, EOFError) as error:
        raise InputError(f"{path}: not a readable image (damaged or truncated gzip: {error})") from None


def _check_nifti(path: Path) -> None:
    """ITK reads NaN voxels of a NIfTI file as zeros and a truncated file as zeros; nibabel does not."""
    import nibabel as nib

    try:
        data = np.asanyarray(nib.load(str(path)).dataobj)
    except Exception as error:  # nibabel raises many types for damaged files
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: not a readable image ({reason[:160]})") from None
    if np.issubdtype(data.dtype, np.floating) and not np.isfinite(data).all():
        raise InputError(f"{path}: holds NaN or infinite voxels")


def read_image(path: Path | str, volume: int | None = None) -> sitk.Image:
    """Read a scalar 3-D (or 2-D, made one-slice 3-D) image; raise InputError on anything else.

    ``volume`` picks one volume of a 4-D series (``--volume N``).
    """
    return check_image(pick_volume(read_any_image(path), volume), str(path))


def read_any_image(path: Path | str) -> sitk.Image:
    """Read an image as it is (a 4-D series too), or raise InputError; ``read_image`` checks it."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.name.endswith((".nii", ".nii.gz")):
        _check_nifti(path)
    elif path.suffix == ".gz":
        _check_gzip_complete(path)
    printed: list[str] = []
    try:
        with _native_stderr_held(printed):
            image = _read_dicom_series(path) if path.is_dir() else sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: not a readable image ({_failure_reason(error, printed)[:160]})") from None
    return image


def _failure_reason(error: RuntimeError, printed: list[str]) -> str:
    """The most telling line of a failed read: what the native reader printed, else ITK's error.

    >>> _failure_reason(RuntimeError("Exception thrown in ImageFileReader_Execute: itkMetaImageIO.cxx:490:\\n"
    ...     "ITK ERROR: MetaImageIO(0x5): File cannot be read: a.mha for reading."), ["MetaImage: data not read completely"])
    'MetaImage: data not read completely'
    """
    if printed:
        return printed[0].strip(" *")
    lines = [line.strip() for line in str(error).splitlines()]
    reason = next((line for line in lines if "rror" in line or "ERROR" in line or "nable" in line), "unreadable")
    return reason.split("): ", 1)[-1] if reason.startswith("ITK ERROR") else reason


@contextmanager
def _native_stderr_held(printed: list[str]) -> Iterator[None]:
    """Keep what ITK's C and C++ readers (MetaIO, NIfTI, GDCM) write straight to stderr out of the
    user's one line; the lines are appended to ``printed`` for the caller's reason."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            printed.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip())


def check_image(image: sitk.Image, name: str = "input") -> sitk.Image:
    """Refuse vector images, series (4-D and up) and what ``check_voxels`` refuses; promote 2-D to one slice."""
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per voxel (vector or RGB); "
                         "a scalar MRI volume is needed")
    if image.GetDimension() == 4:
        raise InputError(f"{name}: is 4-D ({image.GetSize()[3]} volumes); pick one volume with --volume N")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError(f"{name}: {image.GetDimension()}-D images are not supported")
    check_voxels(sitk.GetArrayViewFromImage(image), name)
    return image


def pick_volume(image: sitk.Image, index: int | None) -> sitk.Image:
    """One 3-D volume of a 4-D series (``--volume N``); anything else as it is, without ``index``."""
    if index is None:
        return image
    if image.GetDimension() != 4:
        raise InputError(f"--volume {index}: the input is {image.GetDimension()}-D; --volume picks a volume of a 4-D series")
    count = image.GetSize()[3]
    if not 0 <= index < count:
        raise InputError(f"--volume {index} is out of range: the series has {count} volumes (0..{count - 1})")
    size = list(image.GetSize())
    size[3] = 0
    return sitk.Extract(image, size, [0, 0, 0, index])


@dataclass(frozen=True)
class Geometry:
    """A 3-D image's voxel grid without its voxels (in SimpleITK's x-y-z order): what an output
    needs of its input, so that a large input's voxels need not be kept while it is denoised."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Geometry:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def image_like(array: np.ndarray, reference: sitk.Image | Geometry) -> sitk.Image:
    """A float32 image from a z-y-x array, with ``reference``'s size, spacing, origin and direction.

    >>> reference = sitk.Image(4, 3, 2, sitk.sitkInt16)
    >>> reference.SetSpacing((0.5, 1.0, 6.0))
    >>> image_like(np.zeros(24), Geometry.of(reference)).GetSpacing()
    (0.5, 1.0, 6.0)
    """
    geometry = reference if isinstance(reference, Geometry) else Geometry.of(reference)
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32).reshape(geometry.size[::-1]))
    image.SetSpacing(geometry.spacing)
    image.SetOrigin(geometry.origin)
    image.SetDirection(geometry.direction)
    return image


def refuse_same_path(input_path: Path | str, output_path: Path | str) -> None:
    """An output that would overwrite the input is refused before any work is done."""
    if Path(output_path).resolve() == Path(input_path).resolve():
        raise InputError(f"{output_path}: output path equals the input path; the input is never overwritten")


def check_output_path(path: Path | str) -> None:
    """Refuse an output whose folder is missing, or in a header-and-data format, whose data file
    would keep its temporary name (checked before the work and again when writing)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path}: folder {path.parent} does not exist")
    if path.name.lower().endswith((".mhd", ".nhdr")):
        raise InputError(f"{path}: .mhd and .nhdr keep the voxels in a second file; write .mha or .nrrd")


# Far beyond any one write, so another process's write in progress is left alone.
STALE_AFTER_SECONDS = 3600


def is_stale(path: Path) -> bool:
    """Whether ``path`` was last changed over STALE_AFTER_SECONDS ago (FileNotFoundError if it is gone)."""
    return time.time() - path.stat().st_mtime > STALE_AFTER_SECONDS


def remove_stale(leftovers: Iterable[Path]) -> list[Path]:
    """Remove the files among ``leftovers`` that a killed process (kill -9, a lost node) left:
    those untouched for STALE_AFTER_SECONDS. Returns what was removed."""
    removed = []
    for leftover in leftovers:
        if leftover.is_file() and is_stale(leftover):
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    return removed


def new_file_mode() -> int:
    """The permissions a new file gets under the process's umask (mkstemp's are always 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_image(image: sitk.Image, path: Path | str) -> None:
    """Write one image atomically."""
    write_images([(image, path)])


def write_images(images: list[tuple[sitk.Image, Path | str]]) -> None:
    """Write every image to a temporary file beside its destination, then rename them all.

    If any write fails, no destination is touched and the temporary files are removed.
    """
    with writing_into_place() as temporary_for:
        for image, path in images:
            path = Path(path)
            check_output_path(path)
            suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix
            try:
                sitk.WriteImage(image, temporary_for(path, suffix), True)
            except RuntimeError:
                raise InputError(f"{path}: cannot write this format (use .nii.gz, .nii, .nrrd or .mha)") from None


@contextmanager
def writing_into_place() -> Iterator[Callable[[Path, str], str]]:
    """Yields ``temporary_for(destination, suffix)``: the name of a new, empty temporary file
    ``.<name>.<random><suffix>`` beside ``destination``, to write its content to. When the block
    ends, every temporary is put on disk, given the permissions of a new file and renamed into
    place, in the order asked for; if it fails, no destination is touched. No temporary is left.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with writing_into_place() as temporary_for:
    ...     _ = Path(temporary_for(folder / "a.txt", ".tmp")).write_text("whole")
    >>> [p.name for p in folder.iterdir()], (folder / "a.txt").read_text()
    (['a.txt'], 'whole')
    """
    staged: list[tuple[str, Path]] = []

    def temporary_for(destination: Path, suffix: str) -> str:
        handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=suffix, dir=destination.parent)
        os.close(handle)
        staged.append((temporary, destination))
        return temporary

    try:
        yield temporary_for
        for temporary, _ in staged:
            with open(temporary, "rb+") as written:  # on disk before it is renamed into place (a lost node)
                os.fsync(written.fileno())
        mode = new_file_mode()  # readable by those who share the folder, as the umask allows
        for temporary, destination in staged:
            os.chmod(temporary, mode)
            os.replace(temporary, destination)
    finally:
        for temporary, _ in staged:
            Path(temporary).unlink(missing_ok=True)
