"""What a training process spends before its first step, and the memory it keeps: scans loaded into
memory (the default) against the scan cache (``mridenoise train --scan-cache``), empty and filled.

    python benchmarks/training_start.py --data ../shared/data --cache /tmp/scan_cache --batches 20

Each variant runs in a fresh process: it loads the training scans, then draws ``--batches`` training
batches (4 patches of 48³ from one scan each, as ``mridenoise train`` does by default), and reports
the seconds for each part, its peak resident memory and its private memory (resident pages no
other process shares: what every further rank on the node would add) after importing the
libraries and at the end. The cache folder is
emptied before the first cached run.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def private_megabytes() -> float:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    return sum(int(fields[key].split()[0]) for key in ("Private_Clean", "Private_Dirty")) / 1024


def measure(data: str, cache: str | None, batches: int) -> dict:
    from MRIDenoiseLib.training.data import PatchSampler, load_scans, split
    from MRIDenoiseLib.training.scan_cache import prepared_scans

    paths = split(data)[0]
    imported = private_megabytes()
    started = time.perf_counter()
    skipped = []
    scans = (load_scans(paths, lambda p, r: skipped.append(p)) if cache is None
             else prepared_scans(paths, cache, lambda p, r: skipped.append(p)))
    loaded = time.perf_counter()
    sampler = PatchSampler(scans, patch=48, scans_per_step=1, patches_per_scan=4)
    for step in range(batches):
        sampler.batch(step)
    drawn = time.perf_counter()
    return {"scans": len(scans), "skipped": len(skipped), "load_s": round(loaded - started, 2),
            "batch_s": round((drawn - loaded) / batches, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "imports_mb": round(imported), "private_mb": round(private_megabytes())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--cache", required=True, help="scan cache folder (emptied first)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--child", choices=["memory", "cache"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.data, args.cache if args.child == "cache" else None, args.batches)))
        return
    shutil.rmtree(args.cache, ignore_errors=True)
    rows = []
    for label, child in [("in memory", "memory"), ("scan cache, empty", "cache"), ("scan cache, filled", "cache")]:
        finished = subprocess.run([sys.executable, __file__, "--data", args.data, "--cache", args.cache,
                                   "--batches", str(args.batches), "--child", child],
                                  capture_output=True, text=True, check=True)
        rows.append({"variant": label, **json.loads(finished.stdout.splitlines()[-1])})
    cache_mb = sum(p.stat().st_size for p in Path(args.cache).iterdir()) / 2**20
    print("| variant | scans | start-up (s) | per batch (s) | peak resident (MB) | private after the imports (MB) | "
          "private at the end (MB) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {row['scans']} | {row['load_s']} | {row['batch_s']} | {row['peak_rss_mb']} | "
              f"{row['imports_mb']} | {row['private_mb']} |")
    print(f"\ncache folder: {cache_mb:.0f} MB for {rows[-1]['scans']} scans")


if __name__ == "__main__":
    main()
