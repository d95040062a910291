"""Benchmark cases (contrasts, thick slices, bias, lesions) and the residual-gradient correlation."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from MRIDenoiseLib.benchmark_cases import (
    BIAS_AMPLITUDE,
    Lesion,
    bias_field,
    contrast_retained,
    insert_lesions,
    lesion_contrast,
    lesion_profile,
    lesions_on_thick_slices,
    place_lesions,
    remap_contrast,
    thick_slices,
    tissue_levels,
)
from MRIDenoiseLib.mask import head_mask
from MRIDenoiseLib.metrics import residual_gradient_correlation
from MRIDenoiseLib.noise import add_rician_noise

SPACING = (1.0, 1.0, 1.0)
CSF, GM, WM = 35.0, 80.0, 110.0


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    """A head-sized phantom: a WM cube in a GM layer, with CSF and GM slabs deep inside (each class
    a good share of the deep voxels, as in a brain)."""
    t1 = np.zeros((96, 96, 96), np.float32)
    t1[8:88, 8:88, 8:88] = GM
    t1[14:82, 14:82, 14:82] = WM
    t1[24:72, 24:40, 24:72] = CSF
    t1[24:72, 56:72, 24:72] = GM
    return t1


def test_tissue_levels_find_the_phantom_classes(phantom):
    assert tissue_levels(phantom, SPACING) == pytest.approx((CSF, GM, WM), abs=0.5)


def test_t2_like_puts_csf_above_gm_above_wm_and_t1_is_unchanged(phantom):
    t2 = remap_contrast(phantom, "T2", SPACING)
    csf, gm, wm = t2[48, 32, 48], t2[48, 64, 48], t2[48, 48, 48]
    assert csf > gm > wm
    assert gm / wm == pytest.approx(0.55 / 0.38, rel=1e-3)  # the documented nodes
    assert t2[0, 0, 0] == 0.0
    np.testing.assert_array_equal(remap_contrast(phantom, "T1", SPACING), phantom)


def test_pd_like_is_flatter_than_t1(phantom):
    pd = remap_contrast(phantom, "PD", SPACING)
    gm, wm = pd[48, 64, 48], pd[48, 48, 48]
    assert gm > wm
    assert (gm - wm) / gm == pytest.approx(1 - 0.7 / 0.85, rel=1e-3)
    assert (gm - wm) / gm < (WM - GM) / WM  # grey/white contrast 18% instead of 27%


def test_remap_is_a_fixed_function_of_the_scan(phantom):
    np.testing.assert_array_equal(remap_contrast(phantom, "PD", SPACING), remap_contrast(phantom.copy(), "PD", SPACING))
    with pytest.raises(ValueError):
        remap_contrast(phantom, "FLAIR", SPACING)


def test_thick_slices_average_slabs_and_keep_the_mean():
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 100, (30, 8, 13)).astype(np.float32)
    thick, spacing = thick_slices(volume, (1.0, 0.5, 1.0), axis=2, thickness_mm=6.0)
    assert thick.shape == (30, 8, 2) and spacing == (1.0, 0.5, 6.0)
    np.testing.assert_allclose(thick[..., 1], volume[..., 6:12].mean(axis=-1), rtol=1e-6)
    # on 2 mm slices, 6 mm is 3 of them
    assert thick_slices(volume, (2.0, 1.0, 1.0), axis=0)[0].shape == (10, 8, 13)


def test_noise_added_after_thick_slices_keeps_its_sigma():
    """The scanner's order: the thick acquisition is noisy at the full sigma, not averaged down."""
    clean, _ = thick_slices(np.full((60, 40, 40), 200.0, np.float32), SPACING, 0)
    noisy = add_rician_noise(clean, 10.0, np.random.default_rng(1))
    assert np.std(noisy - clean) == pytest.approx(10.0, rel=0.03)


def test_bias_field_spans_plus_minus_20_percent_smoothly():
    field = bias_field((40, 50, 60))
    assert field.min() == pytest.approx(1 - BIAS_AMPLITUDE, abs=1e-6)
    assert field.max() == pytest.approx(1 + BIAS_AMPLITUDE, abs=1e-6)
    assert np.abs(np.diff(field, axis=2)).max() < 0.02  # smooth: under 2% per voxel
    np.testing.assert_array_equal(field, bias_field((40, 50, 60)))


def test_inserted_lesion_has_the_asked_contrast():
    image = np.full((41, 41, 41), 100.0, np.float32)
    lesion = Lesion(centre=(20, 20, 20), radius_mm=3.0, contrast=-0.2)
    lesioned = insert_lesions(image, [lesion], SPACING)
    assert lesioned[20, 20, 20] == pytest.approx(80.0, abs=0.01)
    assert lesioned[20, 20, 26] == pytest.approx(100.0, abs=0.01)  # 3 mm past the edge: untouched
    assert lesion_contrast(lesioned, lesion, SPACING) == pytest.approx(-19.1, abs=0.1)


def test_halving_the_contrast_keeps_half_of_it():
    image = np.full((41, 41, 41), 100.0, np.float32)
    lesions = [Lesion((20, 20, 12), 2.0, 0.15), Lesion((20, 20, 28), 4.0, -0.3)]
    lesioned = insert_lesions(image, lesions, SPACING)
    halved = 0.5 * lesioned + 50.0
    np.testing.assert_allclose(contrast_retained(lesioned, halved, lesions, SPACING), [0.5, 0.5], rtol=1e-6)


def test_gaussian_blur_takes_a_measured_share_of_a_lesions_contrast():
    """A 3 mm lesion blurred with a Gaussian of sigma 1 mm keeps 70% of its contrast, 0.5 mm keeps 92%."""
    image = np.full((41, 41, 41), 100.0, np.float32)
    lesion = [Lesion((20, 20, 20), 3.0, 0.2)]
    lesioned = insert_lesions(image, lesion, SPACING)
    kept = [contrast_retained(lesioned, ndimage.gaussian_filter(lesioned, s), lesion, SPACING)[0] for s in (0.5, 1, 2)]
    assert kept == pytest.approx([0.919, 0.704, 0.323], abs=0.005)


def test_lesion_on_thick_slices_is_measured_in_its_slab_against_lesion_free_surroundings():
    """A 3 mm lesion centred on the first slice of a 6 mm slab: inside it are that slab within 2.5 mm
    in-plane and the slab below, whose last slice is 1 mm from the centre, within 2.29 mm; its
    shell (4.5-6.5 mm away) holds none of the lesion, though the slab below holds some of it."""
    image = np.full((36, 41, 41), 100.0, np.float32)
    lesion = Lesion(centre=(12, 20, 20), radius_mm=3.0, contrast=0.2)
    thick, thick_spacing = thick_slices(insert_lesions(image, [lesion], SPACING), SPACING, 0)
    [on_slabs] = lesions_on_thick_slices([lesion], SPACING, 0)
    assert (on_slabs.centre, on_slabs.offset_mm, on_slabs.slab_half_mm) == ((2, 20, 20), (-2.5, 0, 0), (2.5, 0, 0))
    # the slab holds the lesion only partly: its centre voxel is the mean of the profile over the slab's slices
    expected_centre = 100.0 * (1 + 0.2 * lesion_profile(np.arange(6.0), 3.0).mean())
    assert thick[2, 20, 20] == pytest.approx(expected_centre, rel=1e-5)
    assert thick[1, 20, 20] > 103.0  # the slab below holds some of it
    in_plane = np.hypot(*np.meshgrid(np.arange(41.0) - 20, np.arange(41.0) - 20, indexing="ij"))
    inside = np.concatenate([thick[2][in_plane <= 2.5], thick[1][in_plane <= np.sqrt(2.5**2 - 1)]])
    assert lesion_contrast(thick, on_slabs, thick_spacing) == pytest.approx(inside.mean() - 100.0, abs=0.02)
    halved = 0.5 * thick + 50.0
    assert contrast_retained(thick, halved, [on_slabs], thick_spacing)[0] == pytest.approx(0.5, rel=1e-6)


def test_lesions_are_seeded_deep_in_white_matter_and_apart(phantom):
    lesions = place_lesions(phantom, SPACING, count=4, seed=3)
    assert lesions == place_lesions(phantom, SPACING, count=4, seed=3)
    assert lesions != place_lesions(phantom, SPACING, count=4, seed=4)
    assert len(lesions) == 4
    assert [np.sign(les.contrast) for les in lesions] == [1, -1, 1, -1]
    depth = ndimage.distance_transform_edt(head_mask(phantom))
    for les in lesions:
        assert 2.0 <= les.radius_mm <= 4.0 and 0.10 <= abs(les.contrast) <= 0.30
        assert phantom[les.centre] == WM
        assert depth[les.centre] > 20  # more than 20 mm inside the head mask
        assert min(min(c - 8, 87 - c) for c in les.centre) >= 19  # which is the phantom's edge, give or take the mask's blur
    centres = np.array([les.centre for les in lesions])
    distances = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    assert distances[np.triu_indices(4, 1)].min() >= 16.0


@pytest.fixture(scope="module")
def edges():
    rng = np.random.default_rng(0)
    clean = np.zeros((48, 48, 48))
    clean[8:40, 8:40, 8:40] = 60.0
    clean[16:32, 16:32, 16:32] = 100.0
    clean[20:28, 20:28, 4:44] = 30.0
    noisy = add_rician_noise(clean + 20.0, 5.0, rng).astype(np.float64)
    return clean + 20.0, noisy, np.ones(clean.shape, bool)


def test_residual_of_pure_noise_removal_is_uncorrelated(edges):
    clean, noisy, mask = edges
    assert residual_gradient_correlation(clean, noisy, clean, mask) == 0.0
    # removing most of the noise, but not all of it, leaves a residual that is still only noise
    rng = np.random.default_rng(5)
    partial = clean + 0.3 * (noisy - clean) + rng.normal(0, 1.0, clean.shape)
    assert abs(residual_gradient_correlation(clean, noisy, partial, mask)) < 0.05


def test_blurring_leaves_anatomy_in_the_residual(edges):
    clean, noisy, mask = edges
    mild = residual_gradient_correlation(clean, noisy, ndimage.gaussian_filter(noisy, 0.7), mask)
    strong = residual_gradient_correlation(clean, noisy, ndimage.gaussian_filter(noisy, 1.5), mask)
    assert mild > 0.5 and strong > 0.5


def test_benchmark_case_names_match_the_first_peer_cache():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import quality
    finally:
        sys.path.pop(0)
    names = {case.name for case in quality.CASES}
    assert {"Colin27 1 mm", "IXI080 2 mm", "IXI130 2 mm"} <= names
    assert {"Colin27 6 mm slices PD-like", "Colin27 1 mm T2-like bias", "Colin27 1 mm lesions"} <= names
    thick_lesions = {case.name: case.group for case in quality.CASES if case.thick and case.lesions}
    assert thick_lesions == {f"Colin27 6 mm slices{contrast} lesions": "thick lesions"
                             for contrast in ("", " T2-like", " PD-like")}


def test_the_modes_figure_has_every_case_of_the_default_in_every_mode(tmp_path):
    """benchmarks/modes_figure.py draws each mode's line from its own run's JSON: every run must
    hold the cases and noise levels the default's panels show, or a line would silently miss points."""
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    sys.path.insert(0, str(benchmarks))
    try:
        import modes_figure
    finally:
        sys.path.pop(0)
    results = benchmarks / "results"

    def plotted(rows):
        return {(row["case"], row["noise"]) for row in rows if row["group"] in ("iso", "coarse", "thick")}

    default = plotted(modes_figure.rows_of(results, ["quality.json"]))
    assert len(default) == 39  # 13 panels x 3 noise levels
    for names in modes_figure.MODES.values():
        assert plotted(modes_figure.rows_of(results, names)) == default
    modes_figure.main(["--results", str(results), "--out", str(tmp_path / "modes.png")])
    assert (tmp_path / "modes.png").stat().st_size > 10_000
