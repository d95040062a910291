"""Quality benchmark: noisy input, DIPY NLM, ANTs DenoiseImage and MRIDenoise, side by side.

    python benchmarks/quality.py --data ../shared/data --cache benchmarks/results/peers_cache.json \\
        --out benchmarks/results/quality.md --json benchmarks/results/quality.json \\
        --figures benchmarks/results

Held-out scans only (never trained on): Colin27 at 1 mm and IXI subjects 080 and 130 at 2 mm.
Cases (all made from the clean scan before the noise, ``MRIDenoiseLib/benchmark_cases.py``):

- T1, and T2-like and PD-like remaps of it; Rician noise at 3, 5 and 9% of the clean case's
  maximum, fixed seeds; on Colin27 1 mm, IXI080 2 mm (IXI130 2 mm: T1 only);
- thick slices: Colin27 averaged over 6 mm slabs along the head's superior-inferior axis, noise
  added after;
- 2 mm from a clean source: Colin27 averaged over blocks of 2x2x2 voxels, T1, T2- and PD-like,
  noise added after (the IXI scans' remapped references carry their own amplified noise:
  ``benchmarks/reference_noise.py``);
- a fixed smooth bias field of +-20% (5% noise), scored against the biased clean scan
  (denoising only: no method corrects the bias);
- 12 synthetic lesions (radius 2-4 mm, +-10-30% contrast, in white matter) at 5% noise: the
  contrast of each lesion to its surroundings that a method keeps, relative to the clean
  lesioned scan; at 1 mm, and on 6 mm slices (the same lesions inserted in the 1 mm scan, then
  the slab averaging, then the noise), measured on the thick grid
  (``benchmark_cases.lesions_on_thick_slices``).

Metrics inside the clean case's head mask: PSNR (peak = clean maximum), 3-D SSIM, and the
residual-gradient correlation (``MRIDenoiseLib.metrics.residual_gradient_correlation``: 0 when
the residual ``noisy - denoised`` is pure noise, positive when it holds anatomy). Peers are run
as a user would run them: DIPY ``nlmeans(rician=True)`` with sigma from DIPY's
``estimate_sigma``; ANTs ``denoise_image(noise_model="Rician")``. Peer results are cached
(``--cache``, keyed ``case|noise|method``, with the slices the figures need beside it in a
``.npz``) because they do not depend on this repository's code; MRIDenoise is always recomputed
(``DenoisePipeline().run(noisy, spacing, bias_correction=False)``).

Peers are slow (ANTs takes 2 to 6 minutes on a 1 mm brain on this 2-core machine), so the cache
can be filled in parts and in parallel: ``--peers-only --cases REGEX`` with one cache file per
process, merged afterwards. ``--cached-peers-only`` makes the tables and figures from what is
cached, leaving missing peers out (shown as -) instead of running them.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from MRIDenoiseLib.benchmark_cases import (
    CONTRASTS,
    bias_field,
    block_average,
    contrast_retained,
    insert_lesions,
    lesion_contrast,
    lesions_on_thick_slices,
    place_lesions,
    remap_contrast,
    thick_slices,
)
from MRIDenoiseLib.evaluation import evaluate_arrays
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import residual_gradient_correlation
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.pipeline import DenoisePipeline

SCANS = {
    "Colin27": "train/t1_1mm/colin27_ch2_1mm.nii.gz",
    "IXI080": "train/ixi_t1_2mm/IXI080-HH-1341_T1.nii.gz",
    "IXI130": "train/ixi_t1_2mm/IXI130-HH-1528_T1.nii.gz",
}
METHODS = ("noisy", "DIPY", "ANTs", "MRIDenoise")
PEERS = ("DIPY", "ANTs")
CONTRAST_NAMES = {"T1": "T1", "T2": "T2-like", "PD": "PD-like"}
THICK_MM = 6.0
LESION_COUNT = 12
LESION_SEED = 27
LESION_DRAWS = 16  # further noise draws for the lesion cases (noisy input and MRIDenoise only)
LESION_PATCH_MM = 12  # half-width of the lesion close-ups


@dataclass(frozen=True)
class Case:
    """One benchmark case: a held-out scan, a contrast, and what is done to it before the noise."""

    scan: str
    contrast: str = "T1"
    noise: tuple[int, ...] = (3, 5, 9)
    thick: bool = False
    block: int = 1  # averaged over blocks of block**3 voxels before the noise (a coarser acquisition)
    bias: bool = False
    lesions: bool = False
    figure: bool = False

    @property
    def name(self) -> str:
        """The cache key's case part; plain T1 cases keep the names of the first benchmark."""
        resolution = f"{THICK_MM:g} mm slices" if self.thick else ("1 mm" if self.scan == "Colin27" else "2 mm")
        if self.block > 1:
            resolution = f"{self.block} mm"  # blocks of Colin27's 1 mm voxels
        parts = [self.scan, resolution]
        if self.contrast != "T1":
            parts.append(CONTRAST_NAMES[self.contrast])
        if self.bias:
            parts.append("bias")
        if self.lesions:
            parts.append("lesions")
        return " ".join(parts)

    @property
    def group(self) -> str:
        if self.lesions:
            return "thick lesions" if self.thick else "lesions"
        if self.bias:
            return "bias"
        if self.block > 1:
            return "coarse"
        return "thick" if self.thick else "iso"


CASES = (
    [Case("Colin27", c, (5,), lesions=True) for c in ("T1", "T2", "PD")]
    + [Case("Colin27", c, (5,), thick=True, lesions=True) for c in ("T1", "T2", "PD")]
    + [Case("Colin27", c, thick=True, figure=True) for c in ("T1", "T2", "PD")]
    + [Case("IXI080", c) for c in ("T1", "T2", "PD")]
    + [Case("IXI130", "T1")]
    + [Case("Colin27", c, block=2) for c in ("T1", "T2", "PD")]
    + [Case("Colin27", c, figure=True) for c in ("T1", "T2", "PD")]
    + [Case("Colin27", c, (5,), bias=True) for c in ("T1", "T2", "PD")]
)


def run_priority(run: tuple[Case, int]) -> int:
    """Run order: lesions, the small volumes, then 1 mm at 5%, T1 1 mm at 3 and 9%, the rest.

    ANTs takes 2 to 6 minutes on a 1 mm brain here, so an interrupted run has the most kinds of
    measurement. The tables list cases by group whatever the order they ran in.
    """
    case, percent = run
    if case.lesions:
        return 0
    if case.thick or case.block > 1 or case.scan != "Colin27":
        return 1
    if percent == 5 and (case.contrast == "T1" or not case.bias):
        return 2
    if case.contrast == "T1":
        return 3
    return 4


def run_dipy(noisy: np.ndarray) -> np.ndarray:
    from dipy.denoise.nlmeans import nlmeans
    from dipy.denoise.noise_estimate import estimate_sigma

    sigma = estimate_sigma(noisy, N=1)
    return nlmeans(noisy, sigma=sigma, rician=True)


def run_ants(noisy: np.ndarray, spacing_xyz) -> np.ndarray:
    import ants

    image = ants.from_numpy(noisy.transpose(2, 1, 0).copy(), spacing=tuple(spacing_xyz))
    return ants.denoise_image(image, noise_model="Rician").numpy().transpose(2, 1, 0)


def superior_axis(image: sitk.Image) -> int:
    """The NumPy axis of ``image``'s array that runs closest to superior-inferior."""
    direction = np.array(image.GetDirection()).reshape(3, 3)
    index_axis = int(np.argmax(np.abs(direction[2])))
    return 2 - index_axis


class CaseMaker:
    """Clean case volumes from the held-out scans, read once."""

    def __init__(self, data: Path):
        self.data = data
        self._scans: dict[str, tuple[sitk.Image, np.ndarray]] = {}
        self._lesions: dict[str, list] = {}

    def scan(self, name: str):
        if name not in self._scans:
            image = sitk.ReadImage(str(self.data / SCANS[name]))
            self._scans[name] = image, sitk.GetArrayFromImage(image).astype(np.float32)
        return self._scans[name]

    def lesions(self, name: str, spacing):
        if name not in self._lesions:
            self._lesions[name] = place_lesions(self.scan(name)[1], spacing, LESION_COUNT, seed=LESION_SEED)
        return self._lesions[name]

    def clean(self, case: Case):
        """(clean volume, spacing per NumPy axis, lesions or None, axis of the thick slices or None)."""
        image, t1 = self.scan(case.scan)
        spacing = tuple(float(s) for s in reversed(image.GetSpacing()))
        clean = remap_contrast(t1, case.contrast, spacing)
        lesions = None
        if case.lesions:
            lesions = self.lesions(case.scan, spacing)
            clean = insert_lesions(clean, lesions, spacing)
        if case.bias:
            clean = clean * bias_field(clean.shape)
        axis = None
        if case.thick:
            axis = superior_axis(image)
            if lesions is not None:
                lesions = lesions_on_thick_slices(lesions, spacing, axis, THICK_MM)
            clean, spacing = thick_slices(clean, spacing, axis, THICK_MM)
        clean, spacing = block_average(clean, spacing, case.block)
        return clean.astype(np.float32), spacing, lesions, axis


@dataclass(frozen=True)
class Colin27Sweep:
    """What a sweep over Colin27's acquisitions starts from (``benchmarks/slice_thickness.py``,
    ``benchmarks/coarse_low_noise.py``): its arguments (``--data``, ``--out``, ``--json``), the
    scan as read and as an array, its spacing per NumPy axis, and a pipeline."""

    args: argparse.Namespace
    image: sitk.Image
    t1: np.ndarray
    spacing: tuple[float, float, float]
    pipeline: DenoisePipeline

    @classmethod
    def from_command_line(cls, description: str) -> "Colin27Sweep":
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("--data", type=Path, required=True)
        parser.add_argument("--out", type=Path, help="write the markdown table here as well")
        parser.add_argument("--json", type=Path, help="write every figure here")
        args = parser.parse_args()
        image, t1 = CaseMaker(args.data).scan("Colin27")
        return cls(args, image, t1, tuple(float(s) for s in reversed(image.GetSpacing())), DenoisePipeline())

    def write(self, text: str, rows: list[dict]) -> None:
        """Print the table ``text``; write it to ``--out`` and ``rows`` to ``--json`` where asked."""
        print(text)
        if self.args.out:
            self.args.out.write_text(text + "\n")
        if self.args.json:
            self.args.json.write_text(json.dumps(rows, indent=1))


def case_noise(clean: np.ndarray, percent: int) -> np.ndarray:
    """The case's noisy volume: Rician noise of ``percent``% of the clean maximum, one fixed draw per level."""
    return add_rician_noise(clean, percent / 100 * float(clean.max()), np.random.default_rng(1000 + percent))


def figure_slice(case: Case, shape, axis) -> tuple[int, int]:
    """(axis, index) of the slice shown in the figure: axial for 1 mm, across the slabs for thick."""
    if case.thick:
        across = 1 if axis != 1 else 2
        return across, shape[across] // 2
    return 0, shape[0] // 2


def take_slice(volume: np.ndarray, where: tuple[int, int]) -> np.ndarray:
    return np.take(volume, where[1], axis=where[0])


def lesion_patches(volume: np.ndarray, lesions, spacing) -> np.ndarray:
    """Axial (axis 0) close-ups through each lesion's centre, ``LESION_PATCH_MM`` each way."""
    half = [round(LESION_PATCH_MM / s) for s in spacing[1:]]
    padded = np.pad(volume, [(0, 0), (half[0], half[0]), (half[1], half[1])], mode="edge")
    return np.stack([padded[les.centre[0], les.centre[1]:les.centre[1] + 2 * half[0] + 1,
                            les.centre[2]:les.centre[2] + 2 * half[1] + 1] for les in lesions])


def lesion_entry(lesion) -> dict:
    """A lesion as the JSON lists it; on thick slices with where its centre lies in its slab."""
    entry = {"centre": lesion.centre, "radius_mm": lesion.radius_mm, "contrast": lesion.contrast}
    if any(lesion.slab_half_mm):
        entry.update(offset_mm=lesion.offset_mm, slab_half_mm=lesion.slab_half_mm)
    return entry


def measure(case, clean, noisy, result, mask, spacing, lesions, seconds) -> dict:
    entry = {**evaluate_arrays(clean, result, mask), "seconds": seconds,
             "residual": residual_gradient_correlation(clean, noisy, result, mask)}
    if lesions is not None:
        entry["lesions"] = contrast_retained(clean, result, lesions, spacing).tolist()
    return entry


def lesion_draws(clean, lesions, spacing, percent, pipeline, draws: int = LESION_DRAWS, **options) -> dict:
    """Contrast kept per lesion, averaged over ``draws`` more noise draws, by the noisy input (the
    control: it should keep 100%) and by MRIDenoise; with each lesion's clean contrast in units
    of the noise sigma. One draw cannot measure a lesion whose contrast is below about 1 sigma.
    """
    sigma = percent / 100 * float(clean.max())
    kept = {"noisy": [], "MRIDenoise": []}
    for draw in range(draws):
        noisy = add_rician_noise(clean, sigma, np.random.default_rng(2000 + 10 * draw + percent))
        result = pipeline.run(noisy, tuple(reversed(spacing)), bias_correction=False, **options).denoised
        kept["noisy"].append(contrast_retained(clean, noisy, lesions, spacing))
        kept["MRIDenoise"].append(contrast_retained(clean, result, lesions, spacing))
    return {"draws": draws, "contrast_in_sigma": [lesion_contrast(clean, les, spacing) / sigma for les in lesions],
            **{method: np.mean(values, axis=0).tolist() for method, values in kept.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data")
    parser.add_argument("--out", help="write the markdown tables here as well")
    parser.add_argument("--cache", help="JSON file for peer results (DIPY, ANTs); slices go beside it (.npz)")
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--figures", help="folder for the PNG figures")
    parser.add_argument("--cases", help="only the cases whose name matches this regular expression")
    parser.add_argument("--weights", help="MRIDenoise weights file (default: the bundled ones)")
    parser.add_argument("--preserve-detail", action="store_true", help="run MRIDenoise with --preserve-detail")
    parser.add_argument("--thorough", action="store_true", help="run MRIDenoise with --thorough")
    parser.add_argument("--peers-only", action="store_true", help="only fill the peer cache")
    parser.add_argument("--cached-peers-only", action="store_true",
                        help="do not run DIPY or ANTs: peers missing from the cache are left out (shown as -)")
    args = parser.parse_args()

    cache_path = Path(args.cache) if args.cache else None
    slices_path = cache_path.with_suffix(".npz") if cache_path else None
    cache = json.loads(cache_path.read_text()) if cache_path and cache_path.is_file() else {}
    slices = dict(np.load(slices_path)) if slices_path and slices_path.is_file() else {}
    pipeline = DenoisePipeline(weights=args.weights)
    options = {"preserve_detail": args.preserve_detail, "thorough": args.thorough}
    methods = METHODS[:3] if args.peers_only else METHODS
    maker = CaseMaker(Path(args.data))
    runs = sorted(((c, p) for c in CASES if not args.cases or re.search(args.cases, c.name) for p in c.noise),
                  key=run_priority)
    rows, pictures = [], {}
    started_all = time.perf_counter()
    made = None
    for number, (case, percent) in enumerate(runs, 1):
        if made is None or made[0] != case:
            clean, spacing, lesions, axis = maker.clean(case)
            made = case, clean, spacing, lesions, axis, head_mask(clean)
        _, clean, spacing, lesions, axis, mask = made
        spacing_xyz = tuple(reversed(spacing))
        noisy = case_noise(clean, percent)
        row = {"case": case.name, "scan": case.scan, "contrast": case.contrast, "group": case.group,
               "noise": percent, "shape": list(clean.shape), "spacing": list(spacing)}
        where = figure_slice(case, clean.shape, axis)
        row.update(figure_axis=where[0], peak=float(clean.max()))
        keep_slice = case.figure and percent == 5
        picture = {"clean": take_slice(clean, where), "noisy": take_slice(noisy, where)} if keep_slice else {}
        if lesions is not None:
            picture.update({"clean lesions": lesion_patches(clean, lesions, spacing),
                            "noisy lesions": lesion_patches(noisy, lesions, spacing)})
            row["lesion_list"] = [lesion_entry(les) for les in lesions]
        for method in methods:
            key = f"{case.name}|{percent}|{method}"
            cached = cache.get(key, {})
            if method in PEERS and "residual" in cached and (lesions is None or "lesions" in cached):
                row[method] = cached
                for suffix in ("slice", "lesions"):
                    if f"{key}|{suffix}" in slices:
                        picture[f"{method} {suffix}"] = slices[f"{key}|{suffix}"].astype(np.float32)
                continue
            if method in PEERS and args.cached_peers_only:
                continue
            started = time.perf_counter()
            if method == "noisy":
                result = noisy
            elif method == "DIPY":
                result = run_dipy(noisy)
            elif method == "ANTs":
                result = run_ants(noisy, spacing_xyz)
            else:
                result = pipeline.run(noisy, spacing_xyz, bias_correction=False, **options).denoised
            seconds = time.perf_counter() - started
            row[method] = measure(case, clean, noisy, result, mask, spacing, lesions, seconds)
            if keep_slice:
                picture[f"{method} slice"] = take_slice(result, where)
            if lesions is not None:
                picture[f"{method} lesions"] = lesion_patches(result, lesions, spacing)
            if method in PEERS:
                print(f"  [{number}/{len(runs)}] {key}: {seconds:.0f} s, PSNR {row[method]['psnr']:.2f} "
                      f"(total {(time.perf_counter() - started_all) / 60:.1f} min)", flush=True)
                cache[key] = row[method]
                for suffix in ("slice", "lesions"):
                    if f"{method} {suffix}" in picture:
                        slices[f"{key}|{suffix}"] = picture[f"{method} {suffix}"].astype(np.float16)
                if cache_path:
                    cache_path.write_text(json.dumps(cache, indent=1))
                    np.savez_compressed(slices_path, **slices)
        if lesions is not None and not args.peers_only:
            row["lesion_draws"] = lesion_draws(clean, lesions, spacing, percent, pipeline, **options)
        rows.append(row)
        if picture:
            pictures[(case.name, percent)] = picture
        if not args.peers_only:
            print(format_row(row), flush=True)
    print(f"all cases: {(time.perf_counter() - started_all) / 60:.1f} min", flush=True)
    if args.peers_only:
        return
    from MRIDenoiseLib.comparison_snapshot import model_identity

    tables = format_tables(rows) + f" MRIDenoise weights (where the mode runs the network): {model_identity(args.weights)}."
    print(tables)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(tables + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps({"weights": model_identity(args.weights), "rows": rows}, indent=1))
    if args.figures:
        for path in draw_figures(rows, pictures, Path(args.figures)):
            print(f"wrote {path}")


def cell(entry: dict | None) -> str:
    return "—" if entry is None else f"{entry['psnr']:.2f} / {entry['ssim']:.3f}"


def format_row(row: dict) -> str:
    cells = [cell(row.get(m)) for m in METHODS]
    ours = row.get("MRIDenoise")
    gain = f"{ours['psnr'] - row['noisy']['psnr']:+.2f}" if ours else "—"
    others = [row[m]["psnr"] for m in ("noisy", "DIPY", "ANTs") if m in row]
    versus = f"{ours['psnr'] - max(others):+.2f}" if ours else "—"
    residual = " / ".join(f"{row[m]['residual']:.3f}" if m in row else "—" for m in ("DIPY", "ANTs", "MRIDenoise"))
    label = row["case"].split(" lesions")[0]
    return f"| {label} | {row['noise']}% | " + " | ".join(cells) + f" | {gain} | {versus} | {residual} |"


TABLE_HEADER = ("| case | noise | noisy | DIPY nlmeans | ANTs DenoiseImage | MRIDenoise | MRIDenoise vs noisy (dB) "
                "| MRIDenoise vs best other (dB) | residual-gradient corr. DIPY / ANTs / MRIDenoise |\n"
                "|---|---|---|---|---|---|---|---|---|")
CAPTIONS = {
    "iso": "PSNR / SSIM at the scan's own resolution (Colin27 1 mm; IXI 2 mm).",
    "coarse": ("2 mm from a clean source: Colin27 averaged over blocks of 2x2x2 voxels (a 2 mm acquisition of "
               "an averaged head), then the noise; scored against the averaged clean scan. Its remapped references "
               "are clean, unlike the IXI ones (`benchmarks/reference_noise.py`)."),
    "thick": (f"Thick slices: Colin27 averaged over {THICK_MM:g} mm slabs along superior-inferior, then the noise; "
              "scored against the averaged clean scan."),
    "bias": ("With a bias field: the clean scan times a fixed smooth field of +-20%, then 5% noise; scored "
             "against the biased clean scan (denoising only, `bias_correction=False`; no method removes the bias)."),
    "lesions": ("With 12 synthetic lesions, 5% noise (the lesion table below is measured on these runs)."),
    "thick lesions": (f"With the same 12 lesions on {THICK_MM:g} mm slices: inserted in the clean 1 mm scan, then "
                      f"averaged over {THICK_MM:g} mm slabs along superior-inferior, then 5% noise; scored against the "
                      "averaged clean lesioned scan (the thick-slice lesion tables below are measured on these runs)."),
}
LESION_CAPTIONS = {
    "lesions": ("Lesion contrast kept at 5% noise (contrast = mean inside the lesion minus mean of a shell "
                "1.5-3.5 mm around it, relative to the clean lesioned scan): min / median over the lesions "
                "(how many keep >= 90%)."),
    "thick lesions": (f"Lesion contrast kept at 5% noise on {THICK_MM:g} mm slices, the same measure on the thick grid, "
                      f"relative to the clean lesioned {THICK_MM:g} mm scan; a thick voxel is as far from a lesion as "
                      "the nearest of the 1 mm slices averaged into it (so the slab holding a lesion's centre is "
                      "inside it, and the shell holds no lesion): min / median over the lesions (how many keep >= 90%)."),
}


def lesion_table(rows: list[dict]) -> str:
    """Contrast kept per method over the lesions of each of ``rows`` (one lesion group's runs)."""
    lines = ["| contrast | lesions | noisy | DIPY nlmeans | ANTs DenoiseImage | MRIDenoise |", "|---|---|---|---|---|---|"]
    for row in rows:
        cells = []
        for method in METHODS:
            if method not in row:
                cells.append("—")
                continue
            kept = 100 * np.array(row[method]["lesions"])
            cells.append(f"{kept.min():.0f}% / {np.median(kept):.0f}% ({int((kept >= 90).sum())}/{len(kept)})")
        lines.append(f"| {CONTRAST_NAMES[row['contrast']]} | {len(row['lesion_list'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lesion_draws_table(rows: list[dict]) -> str:
    """Contrast kept over the further noise draws, for those of ``rows`` (one lesion group's runs) that have them."""
    lines = ["| contrast | lesions | noisy (control) | MRIDenoise | lesions of >= 1 sigma | noisy (control) | MRIDenoise |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        if "lesion_draws" not in row:
            continue
        draws = row["lesion_draws"]
        visible = np.abs(draws["contrast_in_sigma"]) >= 1
        cells = []
        for chosen in (np.ones_like(visible), visible):
            cells.append(str(int(chosen.sum())))
            for method in ("noisy", "MRIDenoise"):
                kept = 100 * np.array(draws[method])[chosen]
                cells.append(f"{kept.min():.0f}% / {np.median(kept):.0f}% ({int((kept >= 90).sum())}/{len(kept)})")
        lines.append(f"| {CONTRAST_NAMES[row['contrast']]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_tables(rows: list[dict]) -> str:
    parts = []
    for group in ("iso", "coarse", "thick", "bias", "lesions", "thick lesions"):
        chosen = sorted((r for r in rows if r["group"] == group),
                        key=lambda r: (list(SCANS).index(r["scan"]), CONTRASTS.index(r["contrast"]), r["noise"]))
        if chosen:
            parts.append(CAPTIONS[group] + "\n\n" + TABLE_HEADER + "\n" + "\n".join(format_row(r) for r in chosen))
        if chosen and group in LESION_CAPTIONS:
            parts.append(LESION_CAPTIONS[group] + "\n\n" + lesion_table(chosen))
        if any("lesion_draws" in r for r in chosen):
            parts.append(f"The same, averaged over {LESION_DRAWS} further noise draws (noisy input and MRIDenoise; "
                         "one draw cannot measure a lesion fainter than about one noise sigma): min / median "
                         "(how many keep >= 90%), over all lesions and over those whose clean contrast is at least "
                         "one sigma.\n\n" + lesion_draws_table(chosen))
    one_mm = [r["MRIDenoise"]["seconds"] for r in rows if "MRIDenoise" in r and r["case"].startswith("Colin27 1 mm")]
    footer = ("Cells: PSNR (dB) / SSIM inside the head. Residual-gradient correlation: 0 = the residual is "
              "pure noise, higher = more anatomy in the residual (`MRIDenoiseLib.metrics`).")
    if one_mm:
        footer += (f" MRIDenoise took a median of {np.median(one_mm):.1f} s per 1 mm volume in this run (noise "
                   "estimate and denoising, no N4, the model loaded once where the mode runs it), on a machine "
                   "shared with other work; "
                   "BENCHMARKS.md has the timings measured alone. Peer timings are in the JSON, not compared, "
                   "for the same reason.")
    parts.append(footer)
    return "\n\n".join(parts)


def draw_figures(rows: list[dict], pictures: dict, folder: Path) -> list[Path]:
    """Example slices, lesion close-ups and PSNR against noise level, as PNG files in ``folder``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    by_case = {(r["case"], r["noise"]): r for r in rows}

    examples = [(key, p) for key, p in pictures.items() if "clean" in p and by_case[key]["group"] in ("iso", "thick")]
    if examples:
        columns = ["clean", "noisy", "ANTs", "DIPY", "MRIDenoise", "residual"]
        fig, axes = plt.subplots(len(examples), len(columns), figsize=(2.3 * len(columns), 2.5 * len(examples)),
                                 squeeze=False)
        for line, (key, picture) in zip(axes, examples):
            row = by_case[key]
            spacing = row["spacing"]
            shown = [a for a in range(3) if a != row["figure_axis"]]
            aspect = spacing[shown[0]] / spacing[shown[1]]
            top = float(np.percentile(picture["clean"], 99.5))
            for ax, column in zip(line, columns):
                ax.axis("off")
                if column == "residual":
                    if "MRIDenoise slice" not in picture:
                        continue
                    image = picture["noisy"] - picture["MRIDenoise slice"]
                    limit = 2.5 * row["noise"] / 100 * row["peak"]
                    ax.imshow(image, cmap="RdBu_r", vmin=-limit, vmax=limit, origin="lower", aspect=aspect)
                    ax.set_title("residual (noisy - MRIDenoise)", fontsize=7)
                    continue
                image = picture.get(column if column in ("clean", "noisy") else f"{column} slice")
                if image is None:
                    continue
                ax.imshow(image, cmap="gray", vmin=0, vmax=top, origin="lower", aspect=aspect)
                title = column
                if column in row:
                    title += f"\n{row[column]['psnr']:.2f} dB / {row[column]['ssim']:.3f}"
                ax.set_title(title, fontsize=7)
            line[0].text(-0.08, 0.5, f"{row['case']}\n{row['noise']}% noise", transform=line[0].transAxes,
                         rotation=90, va="center", ha="right", fontsize=8)
        fig.tight_layout()
        written.append(folder / "quality_examples.png")
        fig.savefig(written[-1], dpi=72)
        plt.close(fig)

    lesion_keys = [key for key, p in pictures.items() if "clean lesions" in p]
    if lesion_keys:
        columns = ["clean", "noisy", "ANTs", "DIPY", "MRIDenoise"]
        chosen = []
        for key in lesion_keys:
            listed = by_case[key]["lesion_list"]
            for sign in (-1, 1):  # the smallest hypo- and the smallest hyper-intense lesion
                candidates = [i for i, les in enumerate(listed) if np.sign(les["contrast"]) == sign]
                chosen.append((key, min(candidates, key=lambda i: listed[i]["radius_mm"])))
        fig, axes = plt.subplots(len(chosen), len(columns), figsize=(1.9 * len(columns), 2.1 * len(chosen)),
                                 squeeze=False)
        for line, (key, index) in zip(axes, chosen):
            picture, row = pictures[key], by_case[key]
            lesion = row["lesion_list"][index]
            clean = picture["clean lesions"][index]
            low, high = np.percentile(clean, [1, 99])
            pad = 0.3 * (high - low)
            for ax, column in zip(line, columns):
                ax.axis("off")
                image = picture.get(f"{column} lesions")
                if image is None:
                    continue
                ax.imshow(image[index], cmap="gray", vmin=low - pad, vmax=high + pad, origin="lower")
                title = column
                if column != "clean" and column in row:
                    title += f"\nkept {100 * row[column]['lesions'][index]:.0f}%"
                ax.set_title(title, fontsize=7)
            where = f"{THICK_MM:g} mm slices, " if row["group"] == "thick lesions" else ""
            line[0].text(-0.08, 0.5, f"{where}{CONTRAST_NAMES[row['contrast']]}\nr {lesion['radius_mm']:.1f} mm, "
                         f"{100 * lesion['contrast']:+.0f}%", transform=line[0].transAxes, rotation=90,
                         va="center", ha="right", fontsize=7)
        fig.tight_layout()
        written.append(folder / "quality_lesions.png")
        fig.savefig(written[-1], dpi=90)
        plt.close(fig)

    if draw_psnr_vs_noise(rows, folder / "quality_psnr_vs_noise.png"):
        written.append(folder / "quality_psnr_vs_noise.png")
    return written


def draw_psnr_vs_noise(rows: list[dict], path: Path, modes: dict[str, list[dict]] | None = None) -> bool:
    """PSNR against noise level, a panel per scan and contrast measured at several levels, a line
    per method of ``rows``, and one more per MRIDenoise mode of ``modes`` (label: that run's rows);
    False (nothing drawn) if no case was measured at several levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scans = sorted({r["case"].split(" T2")[0].split(" PD")[0] for r in rows if r["group"] in ("iso", "coarse", "thick")
                    and len({q["noise"] for q in rows if q["case"] == r["case"]}) > 1}, key=lambda n: (n[:3], n))
    if not scans:
        return False
    modes = modes or {}
    fig, axes = plt.subplots(len(scans), 3, figsize=(11, 3.0 * len(scans)), squeeze=False)
    for line, scan in zip(axes, scans):
        for ax, contrast in zip(line, ("T1", "T2", "PD")):
            name = scan if contrast == "T1" else f"{scan} {CONTRAST_NAMES[contrast]}"
            points = sorted((r for r in rows if r["case"] == name), key=lambda r: r["noise"])
            if not points:
                ax.axis("off")
                continue
            for method, style in zip(METHODS, ("k:", "C0-o", "C1-s", "C3-^")):
                have = [r for r in points if method in r]
                ax.plot([r["noise"] for r in have], [r[method]["psnr"] for r in have], style, label=method)
            for (label, mode_rows), style in zip(modes.items(), ("C3--v", "C2-D", "C2--d", "C4-x")):
                have = sorted((r for r in mode_rows if r["case"] == name), key=lambda r: r["noise"])
                ax.plot([r["noise"] for r in have], [r["MRIDenoise"]["psnr"] for r in have], style, label=label)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("Rician noise (% of max)")
            ax.set_ylabel("PSNR in the head (dB)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


if __name__ == "__main__":
    main()
