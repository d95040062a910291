"""The training loop: noisy/clean patch pairs, checkpoints that resume exactly, validation.

The loss is L1 in units of each patch's noise sigma (see ``noise_relative_l1``).
A checkpoint holds the network, optimizer, scheduler, step and torch RNG state. The batch of a
step depends only on (seed, step), so a run stopped and resumed from a checkpoint takes the same
steps as one that was never stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..inference import denoise_volume, resolve_device
from ..metrics import psnr
from ..model import load_network, save_weights
from ..network import DenoiserNet, NetworkConfig
from .data import PatchSampler, Scan, degradation, load_scan, split

CHECKPOINT = "checkpoint.pt"
BEST_WEIGHTS = "best.pt"


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
    network: dict = field(default_factory=lambda: NetworkConfig(channels=(16, 32, 64, 128), strides=(2, 2, 2), num_res_units=1).to_dict())


def noise_relative_l1(output: torch.Tensor, clean: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each patch in units of its noise sigma, averaged over the batch.

    Every noise level weighs the same: without it the loss is all high-noise patches, and the
    network never learns to leave low-noise images alone.
    """
    per_patch = (output - clean).abs().flatten(1).mean(dim=1)
    return (per_patch / sigma.to(per_patch)).mean()


def warmup_cosine(step: int, steps: int, warmup_fraction: float = 0.03) -> float:
    """Learning-rate factor: linear warm-up over the first 3% of steps, then a cosine to zero.

    >>> [round(warmup_cosine(s, 100), 2) for s in (0, 2, 3, 50, 99)]
    [0.33, 1.0, 1.0, 0.52, 0.0]
    """
    warmup = max(1, int(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def make_validation_cases(scans: list[Scan], count: int, seed: int = 1234) -> list[dict]:
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
        cases.append({"image": np.asarray(sample["image"])[0], "target": np.asarray(sample["target"])[0],
                      "mask": np.asarray(sample["mask"])[0] > 0.5, "sigma": float(sample["sigma"])})
    return cases


def validate(network: DenoiserNet, cases: list[dict], device: torch.device = torch.device("cpu")) -> dict:
    """Mean PSNR of the noisy input and of the result over the cases, and the gain between them."""
    noisy, denoised = [], []
    for case in cases:
        result = denoise_volume(case["image"], case["sigma"], network, device=device)
        noisy.append(psnr(case["target"], case["image"], case["mask"]))
        denoised.append(psnr(case["target"], result, case["mask"]))
    network.train()
    return {"psnr_noisy": float(np.mean(noisy)), "psnr_denoised": float(np.mean(denoised)),
            "psnr_gain": float(np.mean(denoised) - np.mean(noisy))}


def _validate_and_keep_best(network, cases, device, best: float, out_dir: Path, step: int, log) -> float:
    """Validate; when the gain beats ``best``, save the weights as best.pt. Returns the new best."""
    network.eval()
    metrics = validate(network, cases, device)
    if metrics["psnr_gain"] > best:
        best = metrics["psnr_gain"]
        save_weights(network, out_dir / BEST_WEIGHTS)
    log({"event": "validation", "step": step, **metrics, "best_gain": best})
    return best


def _save_checkpoint(path: Path, network, optimizer, scheduler, step: int, config: TrainConfig, best: float) -> None:
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"network": network.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "config": asdict(config),
                "torch_rng": torch.get_rng_state(), "best_gain": best}, temporary)
    os.replace(temporary, path)


def train(
    config: TrainConfig,
    out_dir: Path | str,
    training_scans: list[Scan],
    validation_cases: list[dict] | None = None,
    init_weights: Optional[Path] = None,
    resume: bool = True,
    stop_after: Optional[int] = None,
    log: Callable[[dict], None] = print,
    device: str = "cpu",
) -> DenoiserNet:
    """Train into ``out_dir``; resumes from its checkpoint when one is there and ``resume`` is set.

    ``stop_after`` ends the run early (as a killed job would) after that many steps in total.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    network = DenoiserNet(NetworkConfig.from_dict(config.network))
    if init_weights is not None:
        network.load_state_dict(load_network(init_weights).state_dict())
    device = resolve_device(device)
    network.to(device)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_cosine, steps=config.steps))
    sampler = PatchSampler(training_scans, config.patch, config.scans_per_step, config.patches_per_scan, config.seed)
    start, best = 0, -float("inf")
    checkpoint = out_dir / CHECKPOINT
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        network.load_state_dict(state["network"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        start, best = state["step"], state["best_gain"]
        log({"event": "resumed", "step": start})
    if start == 0 and validation_cases:
        best = _validate_and_keep_best(network, validation_cases, device, best, out_dir, 0, log)
    network.train()
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    losses, started = [], time.time()
    for step in range(start, end):
        noisy, clean, sigma = (tensor.to(device) for tensor in sampler.batch(step))
        loss = noise_relative_l1(network(noisy, sigma), clean, sigma)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
        done = step + 1
        if validation_cases and (done % config.validate_every == 0 or done == config.steps):
            best = _validate_and_keep_best(network, validation_cases, device, best, out_dir, done, log)
        if done % config.checkpoint_every == 0 or done == end:
            _save_checkpoint(checkpoint, network, optimizer, scheduler, done, config, best)
            log({"event": "checkpoint", "step": done, "loss": float(np.mean(losses[-config.checkpoint_every:])),
                 "lr": scheduler.get_last_lr()[0], "seconds": round(time.time() - started, 1)})
    return network.cpu()


def train_from_folder(data_dir: Path | str, out_dir: Path | str, config: TrainConfig, init_weights=None, log=print, device: str = "cpu") -> DenoiserNet:
    """Load the fixed split of ``data_dir`` and train; the validation scans are never trained on."""
    training_paths, validation_paths = split(data_dir)
    if not training_paths:
        raise FileNotFoundError(f"no NIfTI scans under {data_dir}")
    log({"event": "data", "training": len(training_paths), "validation": [p.name for p in validation_paths]})
    validation = make_validation_cases([load_scan(p) for p in validation_paths], config.validation_cases) if validation_paths else None
    scans = [load_scan(p) for p in training_paths]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(out_dir) / "config.json", "w") as stream:
        json.dump({**asdict(config), "training_scans": [p.name for p in training_paths],
                   "validation_scans": [p.name for p in validation_paths]}, stream, indent=1)
    return train(config, out_dir, scans, validation, init_weights=init_weights, log=log, device=device)

