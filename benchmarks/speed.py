"""Whole-process time and peak memory of ``mridenoise denoise`` on one scan, median of N runs.

    python benchmarks/speed.py ../shared/data/train/t1_1mm/colin27_ch2_1mm.nii.gz --runs 5

Runs the installed command as a user would (fresh process: imports, model load, read, estimate,
denoise, N4, write), with and without N4, after one warm-up run each. Peak memory is the
maximum resident set size of the process (``wait4``).
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
    args = parser.parse_args()
    beside = os.path.join(os.path.dirname(sys.executable), "mridenoise")
    executable = beside if os.path.exists(beside) else shutil.which("mridenoise")
    if executable is None:
        sys.exit("mridenoise is not installed in this environment")
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "out.nii.gz")
        for label, extra in (("without N4", ["--no-n4"]), ("with N4", [])):
            command = [executable, "denoise", args.scan, output, "--device", args.device, "--quiet", *extra]
            run_once(command)
            results = [run_once(command) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            peak = max(r[1] for r in results)
            print(f"{label}: median {seconds:.2f} s over {args.runs} runs "
                  f"(min {min(r[0] for r in results):.2f}, max {max(r[0] for r in results):.2f}); peak memory {peak:.2f} GB")


if __name__ == "__main__":
    main()
