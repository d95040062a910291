import json
import time
from dataclasses import replace

import nibabel as nib
import numpy as np
import pytest
import torch

from conftest import TINY_NETWORK, phantom, write_volume

from MRIDenoiseLib.block_matching import block_matched_wiener
from MRIDenoiseLib.cli import main
from MRIDenoiseLib.dct_wiener import dct_basis, rician_amplitude, rician_mean
from MRIDenoiseLib.intensity import intensity_scale
from MRIDenoiseLib.model import WeightsError, checksum_path, load_network, sha256_of
from MRIDenoiseLib.noise import add_rician_noise
from MRIDenoiseLib.training.data import PatchSampler, Scan, degradation, is_validation, split
from MRIDenoiseLib.training.degradations import RandContrastRemapd, RandLesionsd, RandThickSlicesd
from MRIDenoiseLib.training.grouped_step import OBJECTIVES, grouped_wiener_mean
from MRIDenoiseLib.training.loop import (
    BEST_WEIGHTS,
    CHECKPOINT,
    LOSSES,
    SHARP_NOISE,
    TrainConfig,
    batch_stream,
    make_validation_cases,
    ranking,
    sharp_validation_cases,
    train,
    validate,
)
from MRIDenoiseLib.training.real_noise import epi_pair, harm_ratio


def scans(count=3):
    result = []
    for seed in range(count):
        volume = phantom((36, 40, 32), seed)
        volume /= volume.max()
        result.append(Scan(volume[None], (volume > 0.05)[None], (1.0, 1.0, 2.0)))
    return result


def config(steps):
    return TrainConfig(steps=steps, patch=16, checkpoint_every=2, validate_every=2, validation_cases=2,
                       network=TINY_NETWORK.to_dict())


def test_resumed_run_continues_exactly(tmp_path):
    training = scans()
    validation = make_validation_cases(scans(1), 2)
    straight = train(config(6), tmp_path / "straight", training, validation, log=lambda record: None)
    train(config(6), tmp_path / "resumed", training, validation, stop_after=3, log=lambda record: None)
    checkpoint = torch.load(tmp_path / "resumed" / CHECKPOINT, weights_only=False)
    assert checkpoint["step"] == 3 and {"optimizer", "scheduler", "torch_rng"} <= set(checkpoint)
    events = []
    resumed = train(config(6), tmp_path / "resumed", training, validation, log=events.append)
    assert events[0] == {"event": "resumed", "step": 3}
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert (tmp_path / "straight" / "best.pt").is_file()


def test_a_run_out_of_time_stops_validated_and_carries_on_exactly(tmp_path):
    training = scans()
    validation = make_validation_cases(scans(1), 2)
    straight = train(config(6), tmp_path / "straight", training, validation, log=lambda record: None)
    events = []
    train(config(6), tmp_path / "timed", training, validation, deadline=time.monotonic(), log=events.append)
    assert events[-1] == {"event": "time limit", "step": 1, "steps": 6}
    assert [record["step"] for record in events if record["event"] == "validation"] == [0, 1]
    assert torch.load(tmp_path / "timed" / CHECKPOINT, weights_only=False)["step"] == 1
    resumed = train(config(6), tmp_path / "timed", training, validation, deadline=time.monotonic() + 3600,
                    log=lambda record: None)
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_best_weights_rank_doing_no_harm_on_real_noise_first(tmp_path):
    pair, events = epi_pair(), []
    train(config(4), tmp_path / "run", scans(), make_validation_cases(scans(1), 2), log=events.append, real_pair=pair)
    validations = [event for event in events if event["event"] == "validation"]
    assert [event["step"] for event in validations] == [0, 2, 4]
    assert all(0.5 < event["real_noise_ratio"] < 2.0 for event in validations)
    chosen = max(validations, key=ranking)
    assert validations[-1]["best_gain"] == chosen["psnr_gain"]
    assert validations[-1]["best_does_no_harm"] == (chosen["real_noise_ratio"] < 1)
    # best.pt holds those weights (stored in float16)
    assert harm_ratio(load_network(tmp_path / "run" / BEST_WEIGHTS), pair) == pytest.approx(chosen["real_noise_ratio"], rel=2e-3)


def test_batches_depend_only_on_seed_and_step():
    first, second = PatchSampler(scans(), patch=16, seed=7), PatchSampler(scans(), patch=16, seed=7)
    second.batch(0)
    for a, b in zip(first.batch(5), second.batch(5)):
        assert torch.equal(a, b)
    noisy, clean, sigma = first.batch(1)
    assert noisy.shape == clean.shape == (4, 1, 16, 16, 16)
    assert (sigma > 0).all() and not torch.equal(noisy, clean)


def test_worker_processes_make_the_same_batches_in_the_same_order():
    sampler = PatchSampler(scans(), patch=16, seed=3)
    in_process = list(batch_stream(sampler.batch, 4, 9))
    from_workers = list(batch_stream(sampler.batch, 4, 9, workers=2))
    assert len(from_workers) == 5
    for expected, made in zip(in_process, from_workers):
        for a, b in zip(expected, made):
            assert torch.equal(a, b)


def test_losses_weigh_every_noise_level_the_same():
    clean = torch.zeros(2, 1, 4, 4, 4)
    sigma = torch.tensor([0.01, 0.1])
    off_by_one_sigma = clean + sigma.reshape(2, 1, 1, 1, 1)
    assert LOSSES["l1"](off_by_one_sigma, clean, sigma).item() == pytest.approx(1.0)
    assert LOSSES["l2"](2 * off_by_one_sigma, clean, sigma).item() == pytest.approx(4.0)


def test_weighted_losses_count_each_voxel_by_its_weight():
    clean = torch.zeros(1, 1, 4, 4, 4)
    output = clean.clone()
    output[0, 0, 0, 0, 0] = 2.0
    sigma = torch.tensor([1.0])
    weight = torch.ones_like(clean)
    assert LOSSES["l1"](output, clean, sigma, weight).item() == pytest.approx(LOSSES["l1"](output, clean, sigma).item())
    weight[0, 0, 0, 0, 0] = 31.0
    assert LOSSES["l1"](output, clean, sigma, weight).item() == pytest.approx(2.0 * 31 / (63 + 31))
    assert LOSSES["l2"](output, clean, sigma, weight).item() == pytest.approx(4.0 * 31 / (63 + 31))


def test_lesions_are_inserted_in_tissue_and_weighted():
    volume = np.zeros((1, 40, 40, 40), np.float32)
    volume[0, 5:35, 5:35, 5:35] = 0.5
    sample = {"target": volume, "mask": volume > 0, "spacing": (1.0, 1.0, 1.0)}
    transform = RandLesionsd(prob=1.0, fraction=0.02, radius_mm=(2.0, 3.0), contrast=(0.2, 0.3))
    transform.set_random_state(0)
    out = transform(sample)
    changed = np.abs(out["target"] - volume) > 0.01
    assert changed.any() and not changed[0, :5].any() and np.all(volume == sample["target"])
    assert np.all(out["weight"] >= 1.0) and out["weight"].max() > 20.0
    # Where a lesion is (a change of at least half the weakest contrast), the loss weighs it.
    assert np.all(out["weight"][np.abs(out["target"] - volume) > 0.5 * 0.2 * 0.5] > 10.0)
    lesioned = np.abs(out["target"][changed] / 0.5 - 1)
    assert lesioned.max() <= 0.3 + 1e-6
    untouched = RandLesionsd(prob=0.0)(sample)
    assert np.array_equal(untouched["target"], volume) and np.all(untouched["weight"] == 1.0)


def test_lesion_batches_carry_the_loss_weights():
    noisy, clean, sigma, weight = PatchSampler(scans(), patch=16, seed=1, lesions=True).batch(0)
    assert weight.shape == noisy.shape and (sigma > 0).all()


def test_smoothing_augmentations_can_be_left_out():
    def smoothing_probabilities(chain):
        return [t.prob for t in chain.transforms if type(t).__name__ in ("RandZoomd", "RandGaussianSmoothd")]

    assert smoothing_probabilities(degradation(16, 1)) == [0.6, 0.5]
    assert smoothing_probabilities(degradation(16, 1, smoothing=False)) == [0.0, 0.0]


def test_noise_only_patches_are_the_scans_as_they_are():
    augmentations = ("RandZoomd", "RandGaussianSmoothd", "RandContrastRemapd", "RandBiasFieldd", "RandThickSlicesd")
    chain = degradation(16, 1, noise_only=True)
    assert [t.prob for t in chain.transforms if type(t).__name__ in augmentations] == [0.0] * 5
    volume = np.zeros((1, 40, 40, 40), np.float32)
    volume[0, 4:36, 4:36, 4:36] = 0.5
    flat = [Scan(volume, volume > 0, (1.0, 1.0, 1.0))]

    def levels(sampler):  # distinct clean values per patch: a flat cube on black stays two levels or one
        return [len(np.unique(patch)) for step in range(6) for patch in sampler.batch(step)[1].numpy()]

    assert max(levels(PatchSampler(flat, patch=16, seed=3, noise_only=True))) <= 2
    assert max(levels(PatchSampler(flat, patch=16, seed=3))) > 2  # bias field, zoom, blur, thick slices


def test_thick_slices_average_along_one_axis():
    volume = np.arange(2 * 3 * 10, dtype=np.float32).reshape(1, 2, 3, 10)
    transform = RandThickSlicesd(prob=1.0, thickness_mm=(5.0, 5.0))
    for seed in range(10):
        transform.set_random_state(seed)
        out = transform({"target": volume, "mask": volume > 0, "spacing": (1.0, 1.0, 1.0)})
        if out["target"].shape[-1] == 2:
            assert out["spacing"] == (1.0, 1.0, 5.0)
            assert out["target"][0, 0, 0, 0] == pytest.approx(volume[0, 0, 0, :5].mean())
            return
    pytest.fail("no draw thickened the last axis")


def test_contrast_remap_keeps_background_dark_and_can_invert():
    volume = np.concatenate([np.zeros(20), np.linspace(0.1, 1.0, 80)]).astype(np.float32).reshape(1, 1, 1, 100)
    inverted = 0
    for seed in range(40):
        transform = RandContrastRemapd(prob=1.0)
        transform.set_random_state(seed)
        out = transform({"target": volume})["target"][0, 0, 0]
        assert np.all(out[:20] == 0) and out.max() == pytest.approx(1.0)
        inverted += out[30] > out[-1]
    assert inverted > 5


def test_split_is_fixed_by_name(tmp_path):
    for name in ["IXI010-HH-1_T1.nii.gz", "IXI011-HH-1_T1.nii.gz", "colin27_ch2_1mm.nii.gz"]:
        write_volume(tmp_path / name, phantom((8, 8, 8)))
    training, validation = split(tmp_path)
    assert [p.name for p in training] == ["IXI011-HH-1_T1.nii.gz"]
    assert {p.name for p in validation} == {"IXI010-HH-1_T1.nii.gz", "colin27_ch2_1mm.nii.gz"}
    assert is_validation("IXI600-HH-2660_T1.nii.gz")


def test_train_command_warm_starts_and_logs(tmp_path, tiny_weights):
    data = tmp_path / "data"
    data.mkdir()
    for index in (1, 2, 10):
        write_volume(data / f"IXI{index:03d}-HH-1_T1.nii.gz", phantom((36, 40, 32), index))
    before = sha256_of(tiny_weights)
    code = main(["train", str(data), str(tmp_path / "run"), "--steps", "2", "--patch", "16", "--validate-every", "2",
                 "--checkpoint-every", "1", "--warm-start", "--init-weights", str(tiny_weights), "--noise-only", "--quiet"])
    assert code == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["noise_only"] is True
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records][0] == "data"
    assert all("psnr_gain_sharp" in r for r in records if r["event"] == "validation")  # the held-out scan as it is too
    assert any(r["event"] == "validation" for r in records)
    assert sha256_of(tiny_weights) == before


def _training_folder(tmp_path, count=2):
    data = tmp_path / "data"
    data.mkdir()
    for index in range(1, count + 1):
        write_volume(data / f"IXI{index:03d}-HH-1_T1.nii.gz", phantom((36, 40, 32), index))
    return data


def _train(data, run, tiny_weights, *options):
    return main(["train", str(data), str(run), "--steps", "2", "--patch", "16", "--checkpoint-every", "1",
                 "--init-weights", str(tiny_weights), "--quiet", *map(str, options)])


def test_the_train_command_stops_at_its_time_limit_and_the_same_command_carries_on(tmp_path, tiny_weights):
    data, run = _training_folder(tmp_path), tmp_path / "run"
    write_volume(data / "IXI010-HH-1_T1.nii.gz", phantom((36, 40, 32), 10))  # held out: validated
    for _ in range(2):
        assert _train(data, run, tiny_weights, "--steps", "3", "--time-limit", "1e-9") == 0
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [(r["event"], r["step"]) for r in records if r["event"] in ("resumed", "time limit")] == [
        ("time limit", 1), ("resumed", 1), ("time limit", 2)]
    assert [r["step"] for r in records if r["event"] == "validation"] == [0, 1, 2]
    assert (run / BEST_WEIGHTS).is_file()


def test_a_few_broken_scans_are_skipped_and_recorded(tmp_path, tiny_weights):
    data = _training_folder(tmp_path)
    good = (data / "IXI001-HH-1_T1.nii.gz").read_bytes()
    (data / "IXI003-HH-1_T1.nii.gz").write_bytes(good[: len(good) // 2])
    with_nan = phantom((36, 40, 32), 4)
    with_nan[3, 3, 3] = np.nan
    write_volume(data / "IXI004-HH-1_T1.nii.gz", with_nan)
    nib.save(nib.Nifti1Image(np.stack([phantom((36, 40, 32), 5)] * 2, axis=-1), np.eye(4)), data / "IXI005-HH-1_T1.nii.gz")
    (data / "._IXI001-HH-1_T1.nii.gz").write_bytes(b"a macOS resource fork, not a scan")
    assert _train(data, tmp_path / "run", tiny_weights) == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["training_scans"] == ["IXI001-HH-1_T1.nii.gz", "IXI002-HH-1_T1.nii.gz"]
    reasons = {entry["scan"]: entry["reason"] for entry in recorded["skipped_scans"]}
    assert sorted(reasons) == ["IXI003-HH-1_T1.nii.gz", "IXI004-HH-1_T1.nii.gz", "IXI005-HH-1_T1.nii.gz"]
    assert "not a readable scan" in reasons["IXI003-HH-1_T1.nii.gz"] and "NaN" in reasons["IXI004-HH-1_T1.nii.gz"]
    assert "a 3-D volume" in reasons["IXI005-HH-1_T1.nii.gz"]


@pytest.mark.parametrize("option", [("--patch", 20), ("--steps", 0), ("--lr", -1), ("--workers", -1), ("--checkpoint-every", 0),
                                    ("--time-limit", 0)])
def test_options_that_cannot_make_a_run_are_refused_before_loading(tmp_path, tiny_weights, capsys, option):
    assert _train(tmp_path / "no data needed", tmp_path / "run", tiny_weights, *option) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and option[0] in error and not (tmp_path / "run").exists()


def test_a_run_folder_resumes_only_its_own_run(tmp_path, tiny_weights, capsys):
    data, run = _training_folder(tmp_path), tmp_path / "run"
    assert _train(data, run, tiny_weights) == 0
    saved = (run / "config.json").read_text()
    assert _train(data, run, tiny_weights, "--lr", "1e-2") == 2
    assert "other settings (learning_rate 0.0005, not 0.01)" in capsys.readouterr().err
    assert (run / "config.json").read_text() == saved
    (run / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes()[:1000])
    assert _train(data, run, tiny_weights) == 2
    assert "damaged" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert _train(data, tmp_path / "a_file", tiny_weights) == 2
    assert "cannot write the run folder" in capsys.readouterr().err


def test_a_weights_file_that_is_not_one_is_refused_in_one_line(tmp_path):
    weights = tmp_path / "notes.pt"
    weights.write_text("not weights")
    checksum_path(weights).write_text(f"{sha256_of(weights)}  notes.pt\n")
    with pytest.raises(WeightsError, match="not a weights file of this network"):
        load_network(weights)


def test_the_trainable_grouped_step_is_the_librarys_and_its_gradient_improves_the_pilot():
    sigma = 0.05
    clean = torch.from_numpy(phantom((30, 24, 20), 0) / 100)  # the first axis holds the most references
    noisy = torch.from_numpy(add_rician_noise(clean.numpy(), sigma, np.random.default_rng(0)))
    pilot = (clean + 0.02 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    mean = grouped_wiener_mean(noisy, pilot, sigma)
    library = block_matched_wiener(noisy, pilot.detach(), sigma, radius=2, matches=8)
    assert (rician_amplitude(mean.detach(), sigma) - library).abs().max() < 1e-4 * library.max()
    target = rician_mean(clean, sigma)
    error = (mean - target).square().mean()
    error.backward()
    with torch.no_grad():  # a small move of the pilot against its gradient lowers the step's error
        moved = pilot - 0.01 * pilot.grad / pilot.grad.abs().max()
        assert (grouped_wiener_mean(noisy, moved, sigma) - target).square().mean() < 0.999 * error


def test_a_basis_first_made_in_inference_mode_serves_training_too():
    dct_basis.cache_clear()  # validation (in inference mode) may be the first to ask for it
    with torch.inference_mode():
        dct_basis(4)
    assert not dct_basis(4).is_inference()


def test_a_run_with_the_step_objective_trains_and_validates_through_the_step(tmp_path):
    cases, runs = make_validation_cases(scans(1), 2), {}
    for objective in OBJECTIVES:
        events = []
        network = train(replace(config(2), objective=objective), tmp_path / objective, scans(), cases, log=events.append)
        runs[objective] = network, events
    network, events = runs["step"]
    validation = [event for event in events if event["event"] == "validation"][-1]
    network.eval()
    assert validate(network, cases, objective="step")["psnr_gain"] == pytest.approx(validation["psnr_gain"], abs=1e-6)
    assert abs(validate(network, cases)["psnr_gain"] - validation["psnr_gain"]) > 0.01  # not the network's own
    losses = {objective: [e["loss"] for e in events if e["event"] == "checkpoint"] for objective, (_, events) in runs.items()}
    assert losses["step"] != losses["network"] and all(np.isfinite(losses["step"]))


def test_sharp_validation_cases_are_the_scans_with_noise_alone_and_scored_apart(tiny_weights):
    held_out = scans(3)
    sharp = sharp_validation_cases(held_out)
    for case, scan, level in zip(sharp, held_out, SHARP_NOISE):
        clean = scan.volume[0]
        assert case["sharp"] and case["image"].shape == clean.shape
        assert np.allclose(case["target"] / case["target"].max(), clean / clean.max(), atol=1e-6)  # nothing but a scale
        assert case["sigma"] / intensity_scale(case["target"]) == pytest.approx(level, rel=1e-5)
    network = load_network(tiny_weights)
    both = validate(network, make_validation_cases(held_out, 2) + sharp)
    assert both["psnr_gain_sharp"] == pytest.approx(validate(network, sharp)["psnr_gain"], abs=1e-9)
    assert "psnr_gain_sharp" not in validate(network, make_validation_cases(held_out, 2))
