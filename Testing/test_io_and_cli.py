"""The command end to end on files: geometry kept, formats, atomic writes, every bad input refused."""

import concurrent.futures
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import phantom, textured_series, write_volume

from MRIDenoiseLib import model, process_memory
from MRIDenoiseLib.batch import claim_scan, denoise_batch, denoise_file, held
from MRIDenoiseLib.cli import Reporter, main
from MRIDenoiseLib.io import InputError, is_stale, read_image, write_images
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.pipeline import DenoisePipeline

OBLIQUE = (0.9848077, -0.1736482, 0.0, 0.1736482, 0.9848077, 0.0, 0.0, 0.0, 1.0)


def noisy_phantom(shape=(40, 48, 44), seed=0):
    return add_rician_noise(phantom(shape, seed), 6.0, np.random.default_rng(seed))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args, tiny_weights) -> int:
    return main(["denoise", *map(str, args), "--weights", str(tiny_weights), "--quiet"])


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_geometry_is_kept_exactly(tmp_path, tiny_weights, extension):
    source = write_volume(tmp_path / f"in{extension}", noisy_phantom(), spacing=(0.9, 1.1, 3.0),
                          origin=(-90.5, 12.25, 40.0), direction=OBLIQUE)
    before = digest(source)
    assert run([source, tmp_path / f"out{extension}", "--no-n4"], tiny_weights) == 0
    original, result = sitk.ReadImage(str(source)), sitk.ReadImage(str(tmp_path / f"out{extension}"))
    assert result.GetSize() == original.GetSize()
    assert result.GetSpacing() == pytest.approx(original.GetSpacing(), abs=1e-6)
    assert result.GetOrigin() == pytest.approx(original.GetOrigin(), abs=1e-5)
    assert result.GetDirection() == pytest.approx(original.GetDirection(), abs=1e-6)
    assert digest(source) == before


def test_dicom_series_folder_is_read(tmp_path, tiny_weights):
    volume = (noisy_phantom((12, 32, 32)) * 10).astype(np.int16)
    folder = tmp_path / "dicom"
    folder.mkdir()
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((0.8, 0.8, 2.5))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(volume.shape[0]):
        plane = image[:, :, index]
        for tag, value in {"0008|0060": "MR", "0020|000e": "1.2.826.0.1.3680043.2.1125.1",
                           "0020|0013": str(index + 1), "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0020|0032": f"0\\0\\{2.5 * index}", "0028|0030": "0.8\\0.8"}.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{index:03d}.dcm"))
        writer.Execute(plane)
    assert read_image(folder).GetSize() == (32, 32, 12)
    assert run([folder, tmp_path / "out.nii.gz", "--no-n4"], tiny_weights) == 0
    assert sitk.ReadImage(str(tmp_path / "out.nii.gz")).GetSize() == (32, 32, 12)


def test_outputs_bias_and_residual(tmp_path, tiny_weights):
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    code = run([source, tmp_path / "out.nii.gz", "--save-bias", tmp_path / "bias.nii.gz",
                "--save-residual", tmp_path / "residual.nii.gz"], tiny_weights)
    assert code == 0
    noisy = sitk.GetArrayFromImage(sitk.ReadImage(str(source)))
    residual = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "residual.nii.gz")))
    bias = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "bias.nii.gz")))
    corrected = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nii.gz")))
    # output = (input - residual) / bias, to float32 precision
    np.testing.assert_allclose(corrected * bias, noisy - residual, rtol=1e-4, atol=1e-3)
    assert 0.5 < bias.min() and bias.max() < 2.0


def test_a_single_2d_slice_is_denoised(tmp_path, tiny_weights, capsys):
    plane = noisy_phantom((1, 48, 44))[0]
    source = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(plane), str(source))
    assert run([source, tmp_path / "out.nii.gz", "--no-n4"], tiny_weights) == 0
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nii.gz"))).size == plane.size
    # N4 cannot fit one slice: skipped, with a note; asked to save its field, refused before any work.
    assert main(["denoise", str(source), str(tmp_path / "n4.nii.gz"), "--weights", str(tiny_weights)]) == 0
    note = "note: bias correction skipped: N4 needs at least 8 voxels along every axis (this volume has 44 x 48 x 1)"
    assert note in capsys.readouterr().out
    assert run([source, tmp_path / "bias_too.nii.gz", "--save-bias", tmp_path / "bias.nii.gz"], tiny_weights) == 2
    assert "drop --save-bias" in capsys.readouterr().err
    assert not (tmp_path / "bias_too.nii.gz").exists() and not (tmp_path / "bias.nii.gz").exists()


def test_4d_input_with_volume_option(tmp_path, tiny_weights):
    series = np.stack([noisy_phantom(seed=s) for s in range(3)], axis=0)  # t, z, y, x
    source = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(v) for v in series]), str(source))
    assert run([source, tmp_path / "out.nii.gz", "--no-n4", "--volume", "2"], tiny_weights) == 0
    assert sitk.ReadImage(str(tmp_path / "out.nii.gz")).GetSize() == (44, 48, 40)


def test_a_given_sigma_is_reported_as_given(tmp_path, tiny_weights, capsys):
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    assert main(["denoise", str(source), str(tmp_path / "out.nii.gz"), "--no-n4", "--sigma", "6",
                 "--weights", str(tiny_weights)]) == 0
    assert any(line.startswith("noise sigma (given): 6 (") for line in capsys.readouterr().out.splitlines())


def test_4d_input_takes_its_noise_from_the_series(tmp_path, tiny_weights, capsys):
    series = textured_series()
    source = tmp_path / "series.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(v) for v in series]), str(source))
    assert main(["denoise", str(source), str(tmp_path / "out.nii.gz"), "--no-n4", "--volume", "1",
                 "--weights", str(tiny_weights)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("note: noise sigma from this volume alone") for line in lines)
    used = float(next(line for line in lines if line.startswith("estimated noise sigma:")).split()[3])
    assert used == pytest.approx(6.0, rel=0.05)


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    text = tmp_path / "text.nii.gz"
    text.write_text("this is not an image\n")
    good = write_volume(tmp_path / "good.nii.gz", noisy_phantom())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    plain = write_volume(tmp_path / "plain.nii", noisy_phantom())
    truncated_plain = tmp_path / "truncated.nii"
    truncated_plain.write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    meta = write_volume(tmp_path / "meta.mha", noisy_phantom())
    truncated_meta = tmp_path / "truncated.mha"
    truncated_meta.write_bytes(meta.read_bytes()[: meta.stat().st_size // 2])
    nan = noisy_phantom()
    nan[5, 5, 5] = np.nan
    inf = noisy_phantom()
    inf[6, 6, 6] = np.inf
    vector = sitk.Compose([sitk.GetImageFromArray(noisy_phantom())] * 3)
    sitk.WriteImage(vector, str(tmp_path / "rgb.nii.gz"))
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(noisy_phantom())] * 2)
    sitk.WriteImage(four_d, str(tmp_path / "4d.nii.gz"))
    (tmp_path / "empty_folder").mkdir()
    return {
        "missing": (tmp_path / "nope.nii.gz", "no such file"),
        "text": (text, "not a readable image"),
        "truncated": (truncated, "not a readable image"),
        "truncated plain": (truncated_plain, "not a readable image"),
        # MetaIO prints its reason on stderr itself: it becomes the one line's reason.
        "truncated mha": (truncated_meta, "not a readable image (MetaImage: M_ReadElementsData: data not read completely)"),
        "nan": (write_volume(tmp_path / "nan.nii.gz", nan), "NaN or infinite"),
        "inf": (write_volume(tmp_path / "inf.nii.gz", inf), "NaN or infinite"),
        "zero": (write_volume(tmp_path / "zero.nii.gz", np.zeros((20, 20, 20), np.float32)), "same value"),
        "vector": (tmp_path / "rgb.nii.gz", "components per voxel"),
        "4d": (tmp_path / "4d.nii.gz", "--volume"),
        "no dicom": (tmp_path / "empty_folder", "no DICOM series"),
        "negative": (write_volume(tmp_path / "negative.nii.gz", noisy_phantom() - 100), "magnitude image"),
        "noise-free": (write_volume(tmp_path / "box.nii.gz", np.pad(np.full((20, 20, 20), 255.0, np.float32), 10)),
                       "noise level could not be estimated"),
        "beyond float32": (write_volume(tmp_path / "huge.nrrd", noisy_phantom().astype(np.float64) * 1e37), "32-bit floats"),
    }


@pytest.mark.parametrize("case", ["missing", "text", "truncated", "truncated plain", "truncated mha", "nan", "inf", "zero",
                                  "vector", "4d", "no dicom", "negative", "noise-free", "beyond float32"])
def test_bad_input_gives_one_line_and_no_output(tmp_path, tiny_weights, capfd, case):
    source, message = _bad_inputs(tmp_path)[case]
    capfd.readouterr()
    before = digest(source) if source.is_file() else None
    out = tmp_path / "out.nii.gz"
    assert run([source, out], tiny_weights) == 2
    error = capfd.readouterr().err.strip()  # what C++ readers print straight to stderr counts too
    assert len(error.splitlines()) == 1 and message in error and "Traceback" not in error
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    if before is not None:
        assert digest(source) == before


@pytest.mark.parametrize("option", [("--sigma", "nan"), ("--sigma", "-5"), ("--sigma", "1e30"), ("--volume", "1"),
                                    ("--save-bias", "missing_folder/bias.nii.gz")])
def test_bad_option_gives_one_line_and_no_output(tmp_path, tiny_weights, capsys, option):
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    name, value = option
    value = str(tmp_path / value) if name == "--save-bias" else value
    assert run([source, tmp_path / "out.nii.gz", f"{name}={value}"], tiny_weights) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_outputs_get_the_permissions_of_any_new_file(tmp_path, tiny_weights):
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    previous = os.umask(0o022)
    try:
        assert run([source, tmp_path / "out.nii.gz", "--no-n4"], tiny_weights) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.nii.gz").stat().st_mode) == 0o644


def test_terminated_while_writing_leaves_no_temporary_file(tmp_path, tiny_weights):
    # As a SLURM time limit would: SIGTERM arrives once the output's temporary file is written.
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    script = f"""
import os, signal, sys
import SimpleITK as sitk
from MRIDenoiseLib.cli import Reporter, main
write = sitk.WriteImage
def write_then_terminated(*args):
    write(*args)
    os.kill(os.getpid(), signal.SIGTERM)
sitk.WriteImage = write_then_terminated
sys.exit(main(["denoise", {str(source)!r}, {str(tmp_path / "out.nii.gz")!r}, "--no-n4", "--quiet",
               "--weights", {str(tiny_weights)!r}]))
"""
    assert subprocess.run([sys.executable, "-c", script], timeout=120).returncode == 128 + signal.SIGTERM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nii.gz"]


def test_the_command_runs_from_a_thread_too(tmp_path, tiny_weights):
    # Only the main thread may set the SIGTERM handler; from another, main() leaves it alone.
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    codes = []
    worker = threading.Thread(target=lambda: codes.append(run([source, tmp_path / "out.nii.gz", "--no-n4"], tiny_weights)))
    worker.start()
    worker.join()
    assert codes == [0] and (tmp_path / "out.nii.gz").is_file()


def test_output_equal_to_input_is_refused(tmp_path, tiny_weights, capsys):
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    before = digest(source)
    assert run([source, tmp_path / "." / "in.nii.gz"], tiny_weights) == 2
    assert "equals the input" in capsys.readouterr().err
    assert digest(source) == before


def test_failed_write_leaves_nothing(tmp_path):
    good = sitk.GetImageFromArray(noisy_phantom())
    with pytest.raises(InputError, match="cannot write"):
        write_images([(good, tmp_path / "a.nii.gz"), (good, tmp_path / "b.unknownformat")])
    assert list(tmp_path.iterdir()) == []


def test_damaged_weights_are_refused(tmp_path, tiny_weights, capsys):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(tiny_weights.read_bytes()[:-10] + b"0123456789")
    (tmp_path / "damaged.pt.sha256").write_text(Path(str(tiny_weights) + ".sha256").read_text())
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    assert main(["denoise", str(source), str(tmp_path / "out.nii.gz"), "--weights", str(damaged)]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not (tmp_path / "out.nii.gz").exists()


def test_installed_command_prints_sigma_and_stage_times(tmp_path, tiny_weights):
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    done = subprocess.run([sys.executable, "-m", "MRIDenoiseLib.cli", "denoise", str(source), str(tmp_path / "out.nii.gz"),
                           "--weights", str(tiny_weights)],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "estimated noise sigma" in done.stdout
    for stage in ("read", "noise estimate", "denoising", "bias correction", "write", "total"):
        assert stage in done.stdout


def test_bad_input_from_a_real_process_has_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, "-m", "MRIDenoiseLib.cli", "denoise", str(tmp_path / "missing.nii"),
                           str(tmp_path / "out.nii.gz")],
                          capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr


def test_evaluate_reports_psnr_and_ssim(tmp_path, capsys):
    reference = phantom()
    write_volume(tmp_path / "reference.nii.gz", reference)
    write_volume(tmp_path / "offset.nii.gz", reference + 2.0)
    write_volume(tmp_path / "same.nii.gz", reference)
    assert main(["evaluate", str(tmp_path / "reference.nii.gz"), str(tmp_path / "offset.nii.gz"),
                 str(tmp_path / "same.nii.gz"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["psnr"] == pytest.approx(20 * np.log10(reference.max() / 2.0), abs=1e-3)
    assert rows[1]["psnr"] == float("inf") and rows[1]["ssim"] == pytest.approx(1.0)
    assert rows[0]["ssim"] < 1.0
    # A mask of ones alone is a fine mask (a denoising input could not be constant).
    write_volume(tmp_path / "all.nii.gz", np.ones_like(reference))
    assert main(["evaluate", str(tmp_path / "reference.nii.gz"), str(tmp_path / "offset.nii.gz"), "--mask",
                 str(tmp_path / "all.nii.gz"), "--json"]) == 0
    masked = json.loads(capsys.readouterr().out)[0]
    assert masked["psnr"] == pytest.approx(20 * np.log10(reference.max() / 2.0), abs=1e-3)


@pytest.mark.parametrize("mask, message", [(np.ones((5, 5, 5), np.float32), "shapes differ: reference"),
                                           (None, "the mask holds no voxel")])
def test_evaluate_refuses_a_mask_that_does_not_fit(tmp_path, capsys, mask, message):
    reference = phantom()
    write_volume(tmp_path / "reference.nii.gz", reference)
    write_volume(tmp_path / "mask.nii.gz", np.zeros_like(reference) if mask is None else mask)
    assert main(["evaluate", str(tmp_path / "reference.nii.gz"), str(tmp_path / "reference.nii.gz"), "--mask",
                 str(tmp_path / "mask.nii.gz")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and message in error


def test_batch_folder_skips_done_scans_and_reports_failures(tmp_path, tiny_weights, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for index in range(2):
        write_volume(scans / f"subject{index}.nii.gz", noisy_phantom(seed=index))
    (scans / "broken.nii.gz").write_text("not an image")
    out = tmp_path / "out"
    assert run([scans, out, "--no-n4"], tiny_weights) == 2
    assert sorted(p.name for p in out.iterdir()) == ["subject0.nii.gz", "subject1.nii.gz"]
    assert "broken.nii.gz" in capsys.readouterr().err
    done = (out / "subject0.nii.gz").stat().st_mtime_ns
    (out / "subject1.nii.gz").unlink()  # as if the first run had stopped there
    assert main(["denoise", str(scans), str(out), "--no-n4", "--weights", str(tiny_weights)]) == 2
    assert "denoised 1, skipped 1 already done, failed 1" in capsys.readouterr().out
    assert (out / "subject0.nii.gz").stat().st_mtime_ns == done


def test_batch_list_file_and_output_folder_of_the_inputs(tmp_path, tiny_weights, capsys):
    write_volume(tmp_path / "a.nrrd", noisy_phantom())
    (tmp_path / "list.txt").write_text("# one scan\na.nrrd\n")
    assert run([tmp_path / "list.txt", tmp_path / "out", "--no-n4"], tiny_weights) == 0
    assert (tmp_path / "out" / "a.nrrd").is_file()
    assert run([tmp_path / "list.txt", tmp_path], tiny_weights) == 2
    assert "holds the inputs" in capsys.readouterr().err


class FailsOnTheFirstScan:
    """A pipeline whose first scan meets an error no check foresaw (as N4 once did on a single slice)."""

    load_seconds = 0.0

    def __init__(self, pipeline: DenoisePipeline):
        self.pipeline, self.calls = pipeline, 0

    def run(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("Exception thrown in SimpleITK N4BiasFieldCorrectionImageFilter_Execute\nmore lines")
        return self.pipeline.run(*args, **kwargs)


def test_an_unforeseen_error_on_one_scan_does_not_stop_the_batch(tmp_path, tiny_weights):
    scans = [write_volume(tmp_path / f"subject{index}.nii.gz", noisy_phantom(seed=index)) for index in range(2)]
    summary = denoise_batch(scans, tmp_path / "out", pipeline=FailsOnTheFirstScan(DenoisePipeline(weights=tiny_weights)),
                            bias_correction=False)
    assert summary["denoised"] == 1
    failure = "RuntimeError: Exception thrown in SimpleITK N4BiasFieldCorrectionImageFilter_Execute"
    assert summary["failed"] == [f"{scans[0]}: {failure}"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["subject1.nii.gz"]


def test_a_batch_that_cannot_be_written_is_refused_before_any_work(tmp_path, tiny_weights, capsys):
    for subject in ("sub1", "sub2"):
        (tmp_path / subject).mkdir()
        write_volume(tmp_path / subject / "T1w.nii.gz", noisy_phantom())
    (tmp_path / "same_names.txt").write_text("sub1/T1w.nii.gz\nsub2/T1w.nii.gz\n")
    (tmp_path / "empty.txt").write_text("# nothing yet\n")
    (tmp_path / "a_file").write_text("")
    for batch, output, message in (("same_names.txt", "out", "would both be written as T1w.nii.gz"),
                                   ("empty.txt", "out", "names no scans"),
                                   ("sub1", "a_file", "is a file; a batch needs an output folder")):
        assert run([tmp_path / batch, tmp_path / output], tiny_weights) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and message in error
    assert not (tmp_path / "out").exists()


def test_list_files_as_people_write_them(tmp_path, tiny_weights, capsys):
    write_volume(tmp_path / "a.nrrd", noisy_phantom())
    # A byte-order mark, the same scan twice (once absolute): one output, no refusal.
    (tmp_path / "bom.txt").write_bytes("\ufeffa.nrrd\n".encode() + f"{tmp_path / 'a.nrrd'}\n".encode())
    assert run([tmp_path / "bom.txt", tmp_path / "out", "--no-n4"], tiny_weights) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nrrd"]
    (tmp_path / "latin1.txt").write_bytes("caf\xe9.nrrd\n".encode("latin-1"))
    assert run([tmp_path / "latin1.txt", tmp_path / "out2"], tiny_weights) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not a UTF-8 text list" in error


def test_a_folder_batch_writes_detached_formats_as_one_file_and_ignores_hidden_files(tmp_path, tiny_weights):
    scans = tmp_path / "scans"
    scans.mkdir()
    write_volume(scans / "header.mhd", noisy_phantom())
    (scans / ".partial.nii.gz").write_bytes(b"what a killed run left")
    assert run([scans, tmp_path / "out", "--no-n4"], tiny_weights) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["header.mha"]
    assert run([scans / "header.mhd", tmp_path / "single.mhd", "--no-n4"], tiny_weights) == 2
    assert not (tmp_path / "single.mhd").exists()


def test_a_batch_removes_what_a_killed_run_left_behind_but_not_a_write_in_progress(tmp_path, tiny_weights, capsys):
    scan = write_volume(tmp_path / "a.nii.gz", noisy_phantom())
    out = tmp_path / "out"
    out.mkdir()
    stale, fresh = out / ".a.nii.gz.k3x9q2ab.nii.gz", out / ".a.nii.gz.zz81mm0p.nii.gz"
    for leftover in (stale, fresh):
        leftover.write_bytes(b"partial")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    summary = denoise_batch([scan], out, pipeline=DenoisePipeline(weights=tiny_weights), reporter=Reporter(quiet=False),
                            bias_correction=False)
    assert summary["denoised"] == 1
    assert sorted(p.name for p in out.iterdir()) == [fresh.name, "a.nii.gz"]
    assert capsys.readouterr().out.splitlines()[0] == f"removed 1 temporary file(s) that a stopped run left in {out}"


def test_a_batch_counts_the_model_load_once(tmp_path, tiny_weights, capsys):
    scans = tmp_path / "scans"
    scans.mkdir()
    for index in range(2):
        write_volume(scans / f"s{index}.nii.gz", noisy_phantom(seed=index))
    pipeline = DenoisePipeline(weights=tiny_weights)
    # --preserve-detail runs the network, loaded on first use: within the first scan's time.
    assert denoise_batch(sorted(scans.iterdir()), tmp_path / "out", pipeline=pipeline, reporter=Reporter(quiet=False),
                         bias_correction=False, preserve_detail=True)["denoised"] == 2
    assert pipeline.load_seconds > 0
    times = [line for line in capsys.readouterr().out.splitlines() if line.startswith("time:")]
    assert f"model load {pipeline.load_seconds:.2f} s" in times[0] and "model load 0.00 s" in times[1]


def test_a_named_weights_file_is_loaded_before_the_scan_and_its_load_timed(tmp_path, tiny_weights, capsys,
                                                                           monkeypatch):
    loaded = model.load_network
    monkeypatch.setattr(model, "load_network", lambda path: (time.sleep(0.05), loaded(path))[1])
    source = write_volume(tmp_path / "in.nii.gz", noisy_phantom())
    denoise_file(source, tmp_path / "out.nii.gz", weights=tiny_weights, reporter=Reporter(quiet=False),
                 bias_correction=False)  # the default mode: the network does not run, the named file is checked
    times = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("time:"))
    assert float(times.split("model load ")[1].split(" s")[0]) >= 0.05, times


class Overlapping:
    """A pipeline whose first scan in each thread waits until the other thread is in its first
    scan too, so that two batches on one folder are at work at once however the threads are
    scheduled (a busy machine can hold one thread back for longer than a scan takes)."""

    load_seconds = 0.0

    def __init__(self, pipeline: DenoisePipeline):
        self.pipeline = pipeline
        self.both_started = threading.Barrier(2, timeout=60)
        self.started = threading.local()

    def run(self, *args, **kwargs):
        if not getattr(self.started, "value", False):
            self.started.value = True
            self.both_started.wait()
        return self.pipeline.run(*args, **kwargs)


def test_two_batches_on_one_folder_share_out_the_scans(tmp_path, tiny_weights):
    scans = [write_volume(tmp_path / f"s{index}.nii.gz", noisy_phantom(seed=index)) for index in range(4)]
    out, pipeline = tmp_path / "out", Overlapping(DenoisePipeline(weights=tiny_weights))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        summaries = list(pool.map(lambda _: denoise_batch(scans, out, pipeline=pipeline, bias_correction=False), range(2)))
    assert sum(summary["denoised"] for summary in summaries) == 4, summaries  # each scan once
    assert all(summary["denoised"] >= 1 and not summary["failed"] for summary in summaries), summaries
    assert sum(summary["claimed"] for summary in summaries) >= 1, summaries  # the second met the first's claim
    assert sorted(p.name for p in out.iterdir()) == [scan.name for scan in scans]  # no claim left


def test_a_scan_another_process_holds_is_left_to_it_unless_its_claim_is_stale(tmp_path, tiny_weights, capsys):
    for index in range(2):
        write_volume(tmp_path / f"s{index}.nii.gz", noisy_phantom(seed=index))
    out = tmp_path / "out"
    out.mkdir()
    held, stale = out / ".s0.nii.gz.claim", out / ".s1.nii.gz.claim"
    held.write_text("node07 4242\n")
    stale.write_text("node08 99\n")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    (tmp_path / "list.txt").write_text("s0.nii.gz\ns1.nii.gz\n")
    assert main(["denoise", str(tmp_path / "list.txt"), str(out), "--no-n4", "--weights", str(tiny_weights)]) == 0
    assert "denoised 1, skipped 0 already done, 1 being denoised by another process, failed 0" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [held.name, "s1.nii.gz"]
    assert held.read_text() == "node07 4242\n"


def test_a_claim_left_by_a_killed_process_is_taken_over(tmp_path):
    target = tmp_path / "a.nii.gz"
    claim = claim_scan(target)
    assert claim == tmp_path / ".a.nii.gz.claim" and claim_scan(target) is None
    two_hours_ago = time.time() - 7200
    os.utime(claim, (two_hours_ago, two_hours_ago))
    assert claim_scan(target) == claim and time.time() - claim.stat().st_mtime < 60


@pytest.mark.parametrize("check", [0, 1], ids=["before its rename", "after its rename"])
def test_two_processes_taking_over_one_stale_claim_give_one_winner(tmp_path, monkeypatch, check):
    """While this process takes over a stale claim, at its ``check``-th look at a claim's age,
    another process takes the same claim over from start to end."""
    target = tmp_path / "a.nii.gz"
    claim = claim_scan(target)
    two_hours_ago = time.time() - 7200
    os.utime(claim, (two_hours_ago, two_hours_ago))
    looks, the_other = [], []

    def is_stale_meanwhile_the_other_takes_over(path):
        stale = is_stale(path)
        looks.append(path)
        if len(looks) == check + 1:
            the_other.append((claim_scan(target), claim.stat().st_ino))
        return stale

    monkeypatch.setattr("MRIDenoiseLib.batch.is_stale", is_stale_meanwhile_the_other_takes_over)
    mine = claim_scan(target)
    assert the_other == [(claim, claim.stat().st_ino)] and mine is None  # with unlink-then-create, both won
    assert time.time() - claim.stat().st_mtime < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == [claim.name]


def test_a_held_claim_stays_fresh_while_the_work_goes_on_and_is_removed_after(tmp_path):
    target = tmp_path / "a.nii.gz"
    claim = claim_scan(target)
    two_hours_ago = time.time() - 7200
    with held(claim, every=0.05):
        os.utime(claim, (two_hours_ago, two_hours_ago))  # as if the scan had taken two hours so far
        deadline = time.monotonic() + 10  # a busy machine may hold the heartbeat back for a while
        while time.time() - claim.stat().st_mtime > 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert time.time() - claim.stat().st_mtime < 60
        assert claim_scan(target) is None  # still this process's: not taken over
    assert not claim.exists()


def test_a_volume_larger_than_the_free_memory_is_warned_of_before_it_is_denoised(tmp_path, monkeypatch, capsys):
    scan = write_volume(tmp_path / "s.nii.gz", noisy_phantom(seed=1))  # 84,480 voxels: about 1.08 GB
    monkeypatch.setattr(process_memory, "available_bytes", lambda: 10**9)
    assert main(["denoise", str(scan), str(tmp_path / "out.nii.gz"), "--no-n4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    warned = [number for number, line in enumerate(lines) if line.startswith("note: this volume (0.1 million voxels) "
                                                                              "needs about 1.1 GB of memory")]
    assert warned == [0] and (tmp_path / "out.nii.gz").exists()  # first, and the run goes on
    monkeypatch.setattr(process_memory, "available_bytes", lambda: 2 * 10**9)
    assert main(["denoise", str(scan), str(tmp_path / "again.nii.gz"), "--no-n4"]) == 0
    assert "needs about" not in capsys.readouterr().out
