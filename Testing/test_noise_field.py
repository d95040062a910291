"""A noise level that varies across the image: the field estimate and ``--noise-map``."""

import numpy as np
import SimpleITK as sitk

from conftest import phantom, write_volume
from test_slicer_scene import SlicerLikeScene, slicer

from MRIDenoiseLib.cli import main
from MRIDenoiseLib.noise import add_rician_noise, estimate_noise
from MRIDenoiseLib.noise_field import VARYING_SPREAD, estimate_noise_field
from MRIDenoiseLib.pipeline import DenoisePipeline
from MRIDenoiseLib.slicer_logic import MRIDenoiseLogic
from MRIDenoiseLib.worker_process import InProcessRunner

SHAPE = (96, 112, 96)
SIGMA = 6.0


def ramp(shape=SHAPE, low=0.5, high=1.5) -> np.ndarray:
    """Noise that grows along the second axis, as a coil array's does away from its coils."""
    return np.broadcast_to(np.linspace(low, high, shape[1], dtype=np.float32)[None, :, None], shape)


def noisy_phantom(level: np.ndarray, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    clean = phantom(SHAPE)
    return clean, add_rician_noise(clean, SIGMA * level, np.random.default_rng(seed))


def field_of(noisy: np.ndarray):
    estimate = estimate_noise(noisy)
    return estimate_noise_field(estimate.blocks, estimate.sigma)


def test_the_field_follows_a_noise_level_that_varies():
    clean, noisy = noisy_phantom(ramp())
    field = field_of(noisy)
    head = clean > 50
    found = field.on_grid(SHAPE)[head]
    assert field.varies and field.spread > 1.6
    assert np.corrcoef(found, ramp()[head])[0, 1] > 0.95
    # the ramp's shape, to a constant (the pipeline measures the level of the image divided by it)
    assert np.log(found / ramp()[head]).std() < 0.05


def test_uniform_noise_gives_a_flat_field():
    clean = phantom(SHAPE)
    noisy = add_rician_noise(clean, SIGMA, np.random.default_rng(1))
    field = field_of(noisy)
    assert not field.varies and field.spread < 0.5 * (1 + VARYING_SPREAD)


def test_a_volume_with_too_little_tissue_gives_no_field():
    noisy = add_rician_noise(np.zeros((24, 24, 24)), SIGMA, np.random.default_rng(0))
    assert field_of(noisy) is None


def test_the_noise_map_denoises_varying_noise_better_and_says_so():
    clean, noisy = noisy_phantom(ramp())
    before = noisy.copy()
    pipeline = DenoisePipeline()
    one_sigma = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False)
    mapped = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, noise_map=True)
    np.testing.assert_array_equal(noisy, before)
    head = clean > 50

    def error(result):
        return float(np.mean((result.denoised[head] - clean[head]) ** 2))

    assert error(mapped) < 0.6 * error(one_sigma)
    assert any("the noise map option (--noise-map) may denoise it better" in note for note in one_sigma.notes)
    assert any(note.startswith("denoised against a noise map") for note in mapped.notes)
    np.testing.assert_allclose(mapped.residual, noisy - mapped.denoised)
    # sigma is the level of the image divided by the field: times the field, the true level
    local = mapped.sigma * field_of(noisy).on_grid(SHAPE)[head] / (SIGMA * ramp()[head])
    assert abs(np.median(local) - 1) < 0.1 and np.percentile(local, 95) / np.percentile(local, 5) < 1.3


def test_the_noise_map_leaves_uniform_noise_to_one_sigma():
    clean = phantom(SHAPE)
    noisy = add_rician_noise(clean, SIGMA, np.random.default_rng(2))
    pipeline = DenoisePipeline()
    one_sigma = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False)
    asked = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, noise_map=True)
    np.testing.assert_array_equal(asked.denoised, one_sigma.denoised)
    assert one_sigma.notes == []
    assert len(asked.notes) == 1 and asked.notes[0].startswith("no noise map was used: the noise level looks uniform")


def test_the_command_takes_noise_map_and_saves_the_noise_level(tmp_path, capsys):
    clean, noisy = noisy_phantom(ramp())
    source = write_volume(tmp_path / "in.nii.gz", noisy)
    assert main(["denoise", str(source), str(tmp_path / "out.nii.gz"), "--no-n4", "--noise-map",
                 "--save-noise-map", str(tmp_path / "level.nii.gz")]) == 0
    assert "denoised against a noise map" in capsys.readouterr().out
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nii.gz")))
    head = clean > 50
    assert np.mean((written[head] - clean[head]) ** 2) < 0.8 * np.mean((noisy[head] - clean[head]) ** 2)
    level = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "level.nii.gz")))[head] / (SIGMA * ramp()[head])
    assert abs(np.median(level) - 1) < 0.1 and np.percentile(level, 95) / np.percentile(level, 5) < 1.3
    # without a map, the one sigma everywhere
    assert main(["denoise", str(source), str(tmp_path / "plain.nii.gz"), "--no-n4", "--quiet",
                 "--save-noise-map", str(tmp_path / "one.nii.gz")]) == 0
    one = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "one.nii.gz")))
    assert one.min() == one.max() and 4.0 < one.min() < 7.0


def test_the_noise_map_says_why_it_was_not_used():
    from MRIDenoiseLib.pipeline import varying_noise

    small = add_rician_noise(np.full((24, 24, 24), 50.0), SIGMA, np.random.default_rng(0))
    notes = []
    assert varying_noise(small, True, estimate_noise(small), True, notes) is None
    assert notes == ["no noise map was used: too little of the image is tissue well above the noise to map it"]
    _, noisy = noisy_phantom(ramp())
    signed = noisy - 20
    notes = []
    assert varying_noise(signed, False, estimate_noise(signed), True, notes) is None
    assert notes == ["no noise map was used: the image is not a magnitude image"]
    notes = []
    assert varying_noise(noisy, True, estimate_noise(noisy), False, notes) is None
    assert len(notes) == 1 and notes[0].startswith("the noise level seems to vary across the image, from 0.")


def test_the_slicer_logic_passes_noise_map_on(tmp_path):
    _, noisy = noisy_phantom(ramp())
    logic = MRIDenoiseLogic(runner=InProcessRunner(), temporaryRoot=str(tmp_path))
    scene = SlicerLikeScene()  # held: the node's scene lives as long as it
    node = scene.addVolume(noisy)
    output = logic.process(node, biasCorrection=False, noiseMap=True)
    expected = DenoisePipeline().run(noisy, node.GetSpacing(), bias_correction=False, noise_map=True).denoised
    np.testing.assert_allclose(slicer.util.arrayFromVolume(output), expected, atol=1e-3 * SIGMA)


def test_a_field_that_follows_the_anatomy_is_not_used():
    """Sharp-edged fine structure over low noise (a raw scan's): the blocks' detail is anatomy."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    clean = phantom(SHAPE)
    folds = 10.0 * (ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.5) > 0)
    noisy = add_rician_noise(np.where(clean > 20, clean + folds, clean), 1.0, rng)
    field = field_of(noisy)
    assert field.follows_anatomy and not field.varies
    pipeline = DenoisePipeline()
    asked = pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False, noise_map=True)
    assert asked.notes == ["no noise map was used: the image's finest detail is mostly anatomy, not noise (the noise "
                           "is low against it), so a map of it would follow the anatomy"]
    assert pipeline.run(noisy, (1.0, 1.0, 1.0), bias_correction=False).notes == []
