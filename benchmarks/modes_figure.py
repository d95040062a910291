"""PSNR against noise level for MRIDenoise's modes beside the peers, a panel per scan and
contrast, from the quality benchmark's result files (nothing is denoised; a few seconds):

    python benchmarks/modes_figure.py --results benchmarks/results \\
        --out benchmarks/results/quality_modes_psnr_vs_noise.png

The peers and the default come from ``quality.json``; each mode from the JSON of its own run of
``quality.py`` (BENCHMARKS.md names the commands): ``--preserve-detail``, ``--thorough`` and
``--thorough --preserve-detail``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quality import draw_psnr_vs_noise

MODES = {
    "MRIDenoise --preserve-detail": ["quality_preserve_detail.json"],
    "MRIDenoise --thorough": ["quality_thorough.json"],
    "MRIDenoise --thorough --preserve-detail": ["quality_thorough_preserve_detail.json"],
}


def rows_of(results: Path, names: list[str]) -> list[dict]:
    return [row for name in names for row in json.loads((results / name).read_text())["rows"]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality_modes_psnr_vs_noise.png"))
    args = parser.parse_args(argv)
    modes = {label: rows_of(args.results, names) for label, names in MODES.items()}
    if not draw_psnr_vs_noise(rows_of(args.results, ["quality.json"]), args.out, modes):
        raise SystemExit("no case of quality.json was measured at several noise levels")
    print(args.out)


if __name__ == "__main__":
    main()
