"""Whole-process time and peak memory of ``mridenoise denoise`` on one scan, median of N runs.

    python benchmarks/speed.py ../shared/data/train/t1_1mm/colin27_ch2_1mm.nii.gz --runs 5

Runs the installed command as a user would (fresh process: imports, model load, read, estimate,
denoise, N4, write), with and without N4, after one warm-up run each. Peak memory is the
maximum resident set size of the process (``wait4``).

``--ants N`` also times ANTs ``denoise_image(noise_model="Rician")`` on the same scan, read and
written as a user's script would, N times in the same run, and prints the ratio of the medians
against MRIDenoise without N4. ``--add-noise P`` first writes a copy of the scan with Rician noise
of P% of its maximum (seeded) and times everything on that copy: ANTs' run time depends on the
image (on clean Colin27 it takes less than half as long as on a noisy one). ``--batch N`` also
times one batch of N copies of the scan (``mridenoise denoise FOLDER OUT``, one process, the model
loaded once), without and with N4, and prints the time per scan. ``--thorough`` also times
``--thorough --no-n4``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def run_once(command: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}")
    return elapsed, usage.ru_maxrss / 1024**2  # kB -> GB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ants", type=int, default=0, metavar="N", help="also time ANTs DenoiseImage N times")
    parser.add_argument("--add-noise", type=float, metavar="PERCENT", help="time on a noisy copy of the scan")
    parser.add_argument("--batch", type=int, default=0, metavar="N", help="also time one batch of N copies of the scan")
    parser.add_argument("--thorough", action="store_true", help="also time --thorough (without N4)")
    args = parser.parse_args()
    beside = os.path.join(os.path.dirname(sys.executable), "mridenoise")
    executable = beside if os.path.exists(beside) else shutil.which("mridenoise")
    if executable is None:
        sys.exit("mridenoise is not installed in this environment")
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "out.nii.gz")
        if args.add_noise:
            args.scan = write_noisy_copy(args.scan, args.add_noise, os.path.join(folder, "noisy.nii.gz"))
        medians = {}
        variants = [("without N4", ["--no-n4"]), ("with N4", [])]
        if args.thorough:
            variants.append(("--thorough without N4", ["--no-n4", "--thorough"]))
        for label, extra in variants:
            command = [executable, "denoise", args.scan, output, "--device", args.device, "--quiet", *extra]
            run_once(command)
            medians[label] = report(label, [run_once(command) for _ in range(args.runs)])
        if args.batch:
            scans = os.path.join(folder, "batch")
            os.mkdir(scans)
            for index in range(args.batch):
                shutil.copyfile(args.scan, os.path.join(scans, f"scan{index:03d}.nii.gz"))
            for label, extra in (("without N4", ["--no-n4"]), ("with N4", [])):
                outputs = os.path.join(folder, f"batch out {label}")
                seconds, peak = run_once([executable, "denoise", scans, outputs, "--device", args.device, "--quiet", *extra])
                print(f"batch of {args.batch}, {label}: {seconds:.1f} s, {seconds / args.batch:.2f} s per scan; "
                      f"peak memory {peak:.2f} GB")
        if args.ants:
            command = [sys.executable, "-c", ANTS_SCRIPT, args.scan, output]
            ants = report("ANTs DenoiseImage", [run_once(command) for _ in range(args.ants)])
            print(f"ANTs / MRIDenoise without N4: {ants / medians['without N4']:.1f}x")


ANTS_SCRIPT = (
    "import sys, ants; "
    "ants.image_write(ants.denoise_image(ants.image_read(sys.argv[1]), noise_model='Rician'), sys.argv[2])"
)


def write_noisy_copy(scan: str, percent: float, path: str) -> str:
    import numpy as np
    import SimpleITK as sitk

    from MRIDenoiseLib.io import image_like
    from MRIDenoiseLib.noise import add_rician_noise

    image = sitk.ReadImage(scan)
    clean = sitk.GetArrayFromImage(image).astype(np.float32)
    noisy = add_rician_noise(clean, percent / 100 * float(clean.max()), np.random.default_rng(0))
    sitk.WriteImage(image_like(noisy, image), path)
    return path


def report(label: str, results: list[tuple[float, float]]) -> float:
    seconds = statistics.median(r[0] for r in results)
    peak = max(r[1] for r in results)
    print(f"{label}: median {seconds:.2f} s over {len(results)} runs "
          f"(min {min(r[0] for r in results):.2f}, max {max(r[0] for r in results):.2f}); peak memory {peak:.2f} GB")
    return seconds


if __name__ == "__main__":
    main()
