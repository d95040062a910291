"""A/B of the network pass on one GPU: the library at an earlier commit against the working tree.

    python benchmarks/gpu_speed_ab.py ../shared/data/train/t1_1mm/colin27_ch2_1mm.nii.gz --baseline eb43524

Timings taken on different machines differ by more than most code changes do, so both versions
run here in one process on the same noisy cubes as ``gpu_speed.py``, their passes alternated
(which goes first flips every round). The baseline's ``MRIDenoiseLib`` (with its own bundled
weights) is exported by ``git archive`` as the package ``MRIDenoiseLib_baseline``. Prints, per
cube and window, both medians, their ratio (working tree over baseline), both peaks of GPU
memory, and the largest difference between the two outputs relative to the volume's maximum.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from gpu_speed import noisy_cube, refuse_cpu_fallback

REPOSITORY = Path(__file__).resolve().parent.parent
CASES = ((256, None, 7), (512, None, 5), (512, 256, 3))  # cube side, window, timed rounds


def export_baseline(revision: str, folder: Path) -> None:
    archive = subprocess.run(["git", "-C", str(REPOSITORY), "archive", revision, "MRIDenoiseLib"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    (folder / "MRIDenoiseLib").rename(folder / "MRIDenoiseLib_baseline")
    sys.path.insert(0, str(folder))


def denoiser(package: str):
    inference = importlib.import_module(f"{package}.inference")
    model = importlib.import_module(f"{package}.model")
    network = model.load_network(model.DEFAULT_WEIGHTS)

    def run(volume, sigma, window):
        torch.cuda.synchronize()
        started = time.perf_counter()
        out = inference.denoise_volume(volume, sigma, network, device="cuda", window=window, on_fallback=refuse_cpu_fallback)
        torch.cuda.synchronize()
        return time.perf_counter() - started, out

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan")
    parser.add_argument("--baseline", required=True, help="the git revision to compare against")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        export_baseline(args.baseline, Path(folder))
        versions = {"baseline": denoiser("MRIDenoiseLib_baseline"), "tree": denoiser("MRIDenoiseLib")}
        print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; baseline {args.baseline}")
        for size, window, rounds in CASES:
            volume, sigma = noisy_cube(args.scan, size)
            seconds, peaks, outputs = {name: [] for name in versions}, {}, {}
            for name, run in versions.items():
                run(volume, sigma, window)
                torch.cuda.reset_peak_memory_stats()
                outputs[name] = run(volume, sigma, window)[1]
                peaks[name] = torch.cuda.max_memory_allocated() / 1024**3
            for round_ in range(rounds):
                for name in ("baseline", "tree") if round_ % 2 == 0 else ("tree", "baseline"):
                    seconds[name].append(versions[name](volume, sigma, window)[0])
            baseline, tree = statistics.median(seconds["baseline"]), statistics.median(seconds["tree"])
            difference = float(abs(outputs["baseline"] - outputs["tree"]).max() / volume.max())
            print(f"{size}³, window {window or 'auto'}: baseline {baseline:.3f} s, tree {tree:.3f} s, "
                  f"ratio {tree / baseline:.3f}; peak {peaks['baseline']:.2f} / {peaks['tree']:.2f} GiB; "
                  f"largest output difference {difference:.1e}", flush=True)


if __name__ == "__main__":
    main()
