"""The training loop: noisy/clean patch pairs, checkpoints that resume exactly, validation.

The loss is L1 in units of each patch's noise sigma (see ``noise_relative_l1``); with the "step"
objective it is taken, and the validation scored, on the default grouped step's output with the
network's output as its pilot (``grouped_step``). Validation
denoises fixed degraded whole volumes and nibabel's real EPI pair (``real_noise``); best.pt holds
the validated weights that rank highest (``ranking``): first those that do no harm on the real
pair, then by validation gain.
A checkpoint holds the network, optimizer, scheduler, step and torch RNG state. The batch of a
step depends only on (seed, step) and, under ``torchrun``, the rank (see ``rank_batch``), so a run
stopped and resumed from a checkpoint takes the same steps as one that was never stopped.

Under ``torchrun`` every process trains a DistributedDataParallel copy (gradients averaged over
the ranks); rank 0 alone validates and writes checkpoints, best weights and logs, from the
unwrapped network, so its files load in single-process runs exactly as before.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..input_checks import InputError
from ..metrics import psnr
from ..model import load_network, save_weights
from ..network import DenoiserNet, NetworkConfig
from . import distributed
from .data import PatchSampler, TrainingScan, degradation, load_scans, split
from .degradations import NormaliseIntensityd, RandRicianNoised
from .grouped_step import objective_output, through_grouped_step
from .real_noise import RealPair, epi_pair, harm_ratio
from .scan_cache import prepared_scans

CHECKPOINT = "checkpoint.pt"
BEST_WEIGHTS = "best.pt"
# (noisy, clean, sigma) or, with synthetic lesions, (noisy, clean, sigma, the loss's voxel weights).
Batch = tuple[torch.Tensor, ...]
# How validated weights compare: (does no harm on the real pair, validation gain); see ``ranking``.
Ranking = tuple[bool, float]


@dataclass
class TrainConfig:
    steps: int = 10000
    learning_rate: float = 5e-4
    patch: int = 48
    scans_per_step: int = 1
    patches_per_scan: int = 4
    seed: int = 0
    checkpoint_every: int = 200
    validate_every: int = 500
    validation_cases: int = 12
    workers: int = 0
    loss: str = "l1"
    objective: str = "network"  # or "step": trained and judged as the grouped step's pilot (grouped_step)
    smoothing_augmentation: bool = True
    noise_only: bool = False  # no augmentation but crops, flips, turns and the noise (degradation)
    lesions: bool = False
    network: dict = field(
        default_factory=lambda: NetworkConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1).to_dict())


def _patch_mean(error: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return error.flatten(1).mean(dim=1)
    return (error * weight).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp(min=1e-6)


def noise_relative_l1(output: torch.Tensor, clean: torch.Tensor, sigma: torch.Tensor,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error of each patch in units of its noise sigma, averaged over the batch.

    Every noise level weighs the same: without it the loss is all high-noise patches, and the
    network never learns to leave low-noise images alone. ``weight`` (like ``output``) weighs
    voxels within a patch.
    """
    per_patch = _patch_mean((output - clean).abs(), weight)
    return (per_patch / sigma.to(per_patch)).mean()


def noise_relative_l2(output: torch.Tensor, clean: torch.Tensor, sigma: torch.Tensor,
                      weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of each patch in units of its noise variance (what PSNR measures),
    averaged over the batch: every noise level weighs the same, as in ``noise_relative_l1``."""
    per_patch = _patch_mean((output - clean).square(), weight)
    return (per_patch / sigma.to(per_patch).square()).mean()


LOSSES = {"l1": noise_relative_l1, "l2": noise_relative_l2}


def warmup_cosine(step: int, steps: int, warmup_fraction: float = 0.03) -> float:
    """Learning-rate factor: linear warm-up over the first 3% of steps, then a cosine to zero.

    >>> [round(warmup_cosine(s, 100), 2) for s in (0, 2, 3, 50, 99)]
    [0.33, 1.0, 1.0, 0.52, 0.0]
    """
    warmup = max(1, int(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def make_validation_cases(scans: list[TrainingScan], count: int, seed: int = 1234) -> list[dict]:
    """Fixed degraded whole volumes from held-out scans: same contrasts, bias and noise every time."""
    chain = degradation(patch=16, patches_per_scan=1).transforms[1:-2]
    cases = []
    for index in range(count):
        scan = scans[index % len(scans)]
        sample = dict(scan.as_sample())
        for number, transform in enumerate(chain):
            if hasattr(transform, "set_random_state"):
                transform.set_random_state(seed=seed + 100 * index + number)
            sample = transform(sample)
        cases.append(_validation_case(sample))
    return cases


def _validation_case(sample: dict, **marks) -> dict:
    """A degraded whole-volume sample as arrays without their channel, and ``marks``."""
    return {"image": np.asarray(sample["image"])[0], "target": np.asarray(sample["target"])[0],
            "mask": np.asarray(sample["mask"])[0] > 0.5, "sigma": float(sample["sigma"]), **marks}


# Noise levels of the sharp validation cases, a fraction of each scan's robust maximum: the
# quality benchmark's.
SHARP_NOISE = (0.03, 0.05, 0.09)


def sharp_validation_cases(scans: list[TrainingScan], seed: int = 4321) -> list[dict]:
    """Each held-out scan as it is, Rician noise of 3, 5 or 9% (in turn) its only degradation.

    The random cases (``make_validation_cases``) are zoomed, blurred, remapped or cut into thick
    slices, so they hardly hold the sharp 2 mm single acquisitions that most scans are; runs chosen
    on them alone traded those for the smooth cases (TRAINING_RUNS.md, runs v3 to v5, ps1).
    """
    cases = []
    for index, scan in enumerate(scans):
        level = SHARP_NOISE[index % len(SHARP_NOISE)]
        noise = RandRicianNoised(sigma_range=(level, level))
        noise.set_random_state(seed=seed + index)
        cases.append(_validation_case(NormaliseIntensityd()(noise(dict(scan.as_sample()))), sharp=True))
    return cases


def validate(network: DenoiserNet, cases: list[dict], device: torch.device = torch.device("cpu"),
             real_pair: RealPair | None = None, objective: str = "network") -> dict:
    """Mean PSNR of the noisy input and of the result (``grouped_step.objective_output``) over the
    cases, and the gain between them; with ``real_pair``, also its ``harm_ratio`` (below 1: the
    result is nearer the real pair's second volume than the raw first volume is)."""
    noisy, denoised = [], []
    for case in cases:
        result = objective_output(network, case["image"], case["sigma"], device, objective)
        noisy.append(psnr(case["target"], case["image"], case["mask"]))
        denoised.append(psnr(case["target"], result, case["mask"]))
    metrics = {"psnr_noisy": float(np.mean(noisy)), "psnr_denoised": float(np.mean(denoised)),
               "psnr_gain": float(np.mean(denoised) - np.mean(noisy))}
    sharp = [case.get("sharp", False) for case in cases]
    if any(sharp):
        metrics["psnr_gain_sharp"] = float(np.mean(np.subtract(denoised, noisy)[sharp]))
    if real_pair is not None:
        metrics["real_noise_ratio"] = harm_ratio(network, real_pair, device, objective)
    network.train()
    return metrics


def ranking(metrics: dict) -> Ranking:
    """Weights that do no harm on the real pair rank above any that do; then by validation gain.

    >>> ranking({"psnr_gain": 4.1, "real_noise_ratio": 1.01}) < ranking({"psnr_gain": 3.6, "real_noise_ratio": 0.99})
    True
    """
    return metrics.get("real_noise_ratio", 0.0) < 1.0, metrics["psnr_gain"]


def _validate_and_keep_best(network, cases, real_pair, device, out_dir: Path, log, objective: str, best: Ranking,
                            step: int) -> Ranking:
    """Validate; when the weights rank above ``best``, save them as best.pt. Returns the new best."""
    network.eval()
    metrics = validate(network, cases, device, real_pair, objective)
    if ranking(metrics) > best:
        best = ranking(metrics)
        save_weights(network, out_dir / BEST_WEIGHTS)
    log({"event": "validation", "step": step, **metrics, "best_gain": best[1], "best_does_no_harm": best[0]})
    return best


def _save_checkpoint(path: Path, network, optimizer, scheduler, step: int, config: TrainConfig, best: Ranking) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "config": asdict(config),
                "torch_rng": torch.get_rng_state(), "best_does_no_harm": best[0], "best_gain": best[1]}, temporary)
    os.replace(temporary, path)


def rank_batch(sampler: PatchSampler, step: int, rank: int = 0, world_size: int = 1) -> Batch:
    """This rank's share of a step: draw number ``step * world_size + rank`` of the sampler.

    With one process that is the batch of ``step`` itself, so single-process runs are unchanged;
    the W ranks of a step draw W consecutive, different batches (a pure function of seed, step,
    rank and world size, so resumed runs repeat them).

    >>> class Draws:
    ...     batch = staticmethod(lambda number: number)
    >>> rank_batch(Draws, 5), [rank_batch(Draws, 5, rank, 2) for rank in (0, 1)]
    (5, [10, 11])
    """
    return sampler.batch(step * world_size + rank)


class _StepBatches(torch.utils.data.Dataset):
    """The batches of steps ``start`` to ``end``, by position, for a DataLoader's workers."""

    def __init__(self, batches: Callable[[int], Batch], start: int, end: int):
        self.batches, self.start, self.end = batches, start, end

    def __len__(self) -> int:
        return self.end - self.start

    def __getitem__(self, index: int) -> Batch:
        return self.batches(self.start + index)


def batch_stream(batches: Callable[[int], Batch], start: int, end: int, workers: int = 0) -> Iterator[Batch]:
    """The batches of steps ``start`` to ``end`` in order, made by ``workers`` processes ahead of
    the step that needs them (a GPU outruns one process of MONAI transforms many times over).
    Each batch is still ``batches(step)``, so the stream is the same with any number of workers.

    >>> list(batch_stream(lambda step: step * step, 2, 5))
    [4, 9, 16]
    """
    if workers == 0:
        return (batches(step) for step in range(start, end))
    steps = _StepBatches(batches, start, end)
    return iter(torch.utils.data.DataLoader(steps, batch_size=None, num_workers=workers, prefetch_factor=4))


def _discard(record: dict) -> None:
    """The log of ranks other than 0."""


def train(
    config: TrainConfig,
    out_dir: Path | str,
    training_scans: list[TrainingScan],
    validation_cases: list[dict] | None = None,
    init_weights: Path | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    deadline: float | None = None,
    log: Callable[[dict], None] = print,
    device: str = "cpu",
    batches: Callable[[int], Batch] | None = None,
    real_pair: RealPair | None = None,
) -> DenoiserNet:
    """Train into ``out_dir``; resumes from its checkpoint when one is there and ``resume`` is set.

    ``stop_after`` ends the run early (as a killed job would) after that many steps in total.
    ``deadline`` (a ``time.monotonic()`` time) ends it at the first step that finishes after it,
    validated (best.pt kept if it is the best) and checkpointed there, so that the same command
    carries on from it: for a machine lent for a fixed time.
    ``batches(step)`` gives this process's (noisy, clean, sigma) batch of a step; by default it is
    ``rank_batch`` of a ``PatchSampler`` over ``training_scans``. Under ``torchrun`` (see
    ``distributed.process_group``) this is one rank of a DistributedDataParallel run.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rank, world_size = distributed.rank(), distributed.world_size()
    log = log if rank == 0 else _discard
    torch.manual_seed(config.seed)
    network = DenoiserNet(NetworkConfig.from_dict(config.network))
    if init_weights is not None:
        network.load_state_dict(load_network(init_weights).state_dict())
    device = distributed.local_device(device)
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, steps=config.steps))
    if batches is None:
        sampler = PatchSampler(training_scans, config.patch, config.scans_per_step, config.patches_per_scan, config.seed,
                               config.smoothing_augmentation, config.lesions, config.noise_only)
        batches = partial(rank_batch, sampler, rank=rank, world_size=world_size)
    start, best = 0, (False, -float("inf"))
    checkpoint = out_dir / CHECKPOINT
    if resume and checkpoint.is_file():
        try:
            state = torch.load(checkpoint, map_location=device, weights_only=False)
        except Exception as error:  # a truncated or foreign file: torch raises many types
            raise InputError(f"{checkpoint}: damaged ({type(error).__name__}); remove it to start the run over") from None
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        # Checkpoints from before the real-pair check ranked by gain alone.
        start, best = state["step"], (state.get("best_does_no_harm", True), state["best_gain"])
        log({"event": "resumed", "step": start})
    # Only rank 0 validates (other ranks may have no cases): the others wait at a barrier.
    validating = bool(validation_cases) and rank == 0
    keep_best = partial(_validate_and_keep_best, network, validation_cases, real_pair, device, out_dir, log,
                        config.objective)
    if start == 0 and validating:
        best = keep_best(best, 0)
    distributed.barrier()
    model = network
    if world_size > 1:
        model = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    model.train()
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    losses, started = [], time.time()
    for step, batch in enumerate(batch_stream(batches, start, end, config.workers), start=start):
        noisy, clean, sigma, *weight = (tensor.to(device, non_blocking=True) for tensor in batch)
        output = model(noisy, sigma)
        if config.objective == "step":
            output, clean = through_grouped_step(noisy, output, clean, sigma)
        loss = LOSSES[config.loss](output, clean, sigma, *weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        done = step + 1
        # Every rank stops at the same step: a rank that went on would wait for the others for ever.
        out_of_time = (deadline is not None and done < end
                       and distributed.mean(float(time.monotonic() >= deadline), device) > 0)
        if done % config.validate_every == 0 or done == config.steps or out_of_time:
            if validating:
                best = keep_best(best, done)
            distributed.barrier()
        if done % config.checkpoint_every == 0 or done == end or out_of_time:
            loss_mean = distributed.mean(float(np.mean(losses[-config.checkpoint_every:])), device)
            if rank == 0:
                _save_checkpoint(checkpoint, network, optimizer, scheduler, done, config, best)
            log({"event": "checkpoint", "step": done, "loss": loss_mean,
                 "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - started, 1)})
        if out_of_time:
            log({"event": "time limit", "step": done, "steps": config.steps})
            break
    # No rank may go on (and, say, resume from the checkpoint) before rank 0 has written it.
    distributed.barrier()
    return network.cpu()


# What a resumed run may change: how it is watched and fed, not what it learns.
RESUMABLE_CHANGES = {"workers", "checkpoint_every", "validate_every", "skipped_scans"}


def refuse_a_changed_run(saved: dict, asked: dict) -> None:
    """A run folder resumes the run it holds: other options or other scans would mix two runs.

    >>> refuse_a_changed_run({"steps": 800, "workers": 0}, {"steps": 800, "workers": 4})
    >>> refuse_a_changed_run({"steps": 800, "lesions": True}, {"steps": 1600, "lesions": True})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    MRIDenoiseLib.input_checks.InputError: this run folder holds a run with other settings (steps 800, not 1600); ...
    """
    changed = [f"{key} {saved.get(key)}, not {asked[key]}" if key not in ("training_scans", "validation_scans")
               else f"other {key.replace('_', ' ')}"
               for key in asked if key not in RESUMABLE_CHANGES and saved.get(key) != asked[key]]
    if changed:
        raise InputError(f"this run folder holds a run with other settings ({'; '.join(changed)}); use a new run folder "
                         "(--init-weights its best.pt to start from it)")


def train_from_folder(data_dir: Path | str, out_dir: Path | str, config: TrainConfig, init_weights=None, log=print,
                      device: str = "cpu", scan_cache: Path | str | None = None,
                      deadline: float | None = None) -> DenoiserNet:
    """Load the fixed split of ``data_dir`` and train; the validation scans are never trained on.

    With ``scan_cache``, scans are prepared there once (the ranks of a torchrun job share the work)
    and memory-mapped, not loaded into each process's memory (``scan_cache.prepared_scans``).
    """
    training_paths, validation_paths = split(data_dir)
    if not training_paths:
        raise FileNotFoundError(f"no NIfTI scans under {data_dir}")
    skipped: list[dict] = []

    def skip(path: Path, reason: str) -> None:
        skipped.append({"scan": path.name, "reason": reason})
        if distributed.is_main_process():  # every rank loads the scans; one logs
            log({"event": "skipped", "scan": path.name, "reason": reason})

    def load(paths: list[Path], rank: int = 0, world_size: int = 1) -> list[TrainingScan]:
        if scan_cache is None:
            return load_scans(paths, skip)
        return prepared_scans(paths, scan_cache, skip, rank, world_size)

    scans = load(training_paths, distributed.rank(), distributed.world_size())
    if not scans:
        raise InputError(f"no usable scans under {data_dir}: all {len(training_paths)} training scans were skipped")
    validation = None
    if distributed.is_main_process():
        validation_scans = load(validation_paths)
        skipped_names = {scan["scan"] for scan in skipped}
        kept = [p.name for p in validation_paths if p.name not in skipped_names]
        log({"event": "data", "training": len(scans), "validation": kept, "skipped": len(skipped)})
        if validation_scans:
            validation = make_validation_cases(validation_scans, config.validation_cases) + sharp_validation_cases(
                validation_scans)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        record = {**asdict(config), "training_scans": [p.name for p in training_paths if p.name not in skipped_names],
                  "validation_scans": kept, "skipped_scans": skipped}
        config_path = Path(out_dir) / "config.json"
        if (Path(out_dir) / CHECKPOINT).is_file() and config_path.is_file():
            refuse_a_changed_run(json.loads(config_path.read_text()), json.loads(json.dumps(record)))  # tuples as lists
        else:
            config_path.write_text(json.dumps(record, indent=1))
    return train(config, out_dir, scans, validation, init_weights=init_weights, log=log, device=device,
                 real_pair=epi_pair() if validation else None, deadline=deadline)
