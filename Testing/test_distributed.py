"""Training under torchrun: two CPU ranks (gloo) against one process that sees both ranks' batches.

DistributedDataParallel averages the two ranks' gradients, and each rank's loss is the mean over
its own equal-sized batch, so one step of the two ranks is one step of a single process whose
batch is both ranks' batches together. The negative control is training on rank 0's batches
alone: that is what a run without gradient averaging (rank 0 never hears of rank 1), or with the
same data on both ranks, would produce.

Run as a script, this file is one rank of the torchrun launch (see ``_ranks_main``).
"""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from conftest import REPO, TINY_NETWORK, phantom, write_volume

from MRIDenoiseLib.cli import build_parser, main
from MRIDenoiseLib.model import load_network
from MRIDenoiseLib.training import distributed
from MRIDenoiseLib.training.data import PatchSampler, load_scan, split
from MRIDenoiseLib.training.loop import CHECKPOINT, TrainConfig, train

STEPS, PATCH = 4, 16
TRAIN_SBATCH = REPO / "scripts" / "slurm" / "train.sbatch"
# Stand-ins for SLURM and torchrun that record their arguments, one per line.
FAKES = {
    "srun": 'while [[ $1 == --* ]]; do shift; done; exec "$@"',
    "scontrol": 'if [[ $1 == show ]]; then printf "node01\\nnode02\\n"; else printf "%s\\n" "$@" > "$RECORD/scontrol"; fi',
    "torchrun": 'printf "%s\\n" "$@" > "$RECORD/torchrun"; exec sleep 20',
}
# Float rounding of one gradient over both batches versus two all-reduced ones, through 4 Adam
# steps, was 3e-8 at most; training on rank 0's batches alone ends about 3e-3 away.
TOLERANCE = 1e-6


def _config() -> TrainConfig:
    """What ``_cli_args`` asks of ``mridenoise train``."""
    return TrainConfig(steps=STEPS, patch=PATCH, validate_every=2, checkpoint_every=2,
                       network=TINY_NETWORK.to_dict())


def _cli_args(data: Path, run: Path, weights: Path) -> list[str]:
    """The command's ranks share the preparation of one scan cache (the reference loads scans into memory)."""
    return ["train", str(data), str(run), "--steps", str(STEPS), "--patch", str(PATCH), "--validate-every", "2",
            "--checkpoint-every", "2", "--warm-start", "--init-weights", str(weights), "--device", "cpu",
            "--threads", "1", "--quiet", "--scan-cache", str(run.parent / "scan_cache")]


def _ranks_main(data: Path, out: Path, weights: Path) -> None:
    """One rank: the command for STEPS steps, then the library stopped after 2 steps and resumed,
    then a run whose deadline has passed on rank 1 alone."""
    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        assert main(_cli_args(data, out / "command", weights)) == 0
        scans = [load_scan(path) for path in split(data)[0]]
        log_path = out / f"resumed_log_rank{distributed.rank()}.jsonl"

        def log(record: dict) -> None:
            with open(log_path, "a") as stream:
                stream.write(json.dumps(record) + "\n")

        for stop_after in (2, None):
            train(_config(), out / "resumed", scans, init_weights=weights, stop_after=stop_after, log=log)
        deadline = time.monotonic() + (0 if distributed.rank() == 1 else 3600)
        train(_config(), out / "timed", scans, init_weights=weights, deadline=deadline, log=log)


def _launch_two_ranks(data: Path, out: Path, weights: Path) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               __file__, str(data), str(out), str(weights)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300,
                              check=False)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]


def _single_process(data: Path, out: Path, weights: Path, draws) -> dict:
    """Weights after STEPS steps in this process, step ``s`` training on ``draws(sampler, s)``."""
    scans = [load_scan(path) for path in split(data)[0]]
    sampler = PatchSampler(scans, PATCH, 1, 4, seed=0)
    network = train(_config(), out, scans, init_weights=weights, log=lambda record: None,
                    batches=lambda step: draws(sampler, step))
    return network.state_dict()


def _both_ranks(sampler: PatchSampler, step: int):
    """Ranks 0 and 1 of a 2-rank run draw numbers 2s and 2s+1 (``loop.rank_batch``)."""
    return tuple(torch.cat(pair) for pair in zip(sampler.batch(2 * step), sampler.batch(2 * step + 1)))


def _rank_zero_alone(sampler: PatchSampler, step: int):
    return sampler.batch(2 * step)


def _largest_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max((first[key].float() - second[key].float()).abs().max().item() for key in first)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_ranks_train_as_one_process_on_both_ranks_batches(tmp_path, tiny_weights):
    data = tmp_path / "data"
    data.mkdir()
    for index in (1, 2, 3, 10):
        write_volume(data / f"IXI{index:03d}-HH-1_T1.nii.gz", phantom((36, 40, 32), index))
    _launch_two_ranks(data, tmp_path / "ranks", tiny_weights)

    command = torch.load(tmp_path / "ranks/command" / CHECKPOINT, weights_only=False)
    resumed = torch.load(tmp_path / "ranks/resumed" / CHECKPOINT, weights_only=False)
    assert command["step"] == resumed["step"] == STEPS
    reference = _single_process(data, tmp_path / "both", tiny_weights, _both_ranks)
    alone = _single_process(data, tmp_path / "alone", tiny_weights, _rank_zero_alone)

    # Saved from the unwrapped network: the keys of a single-process run, no "module." prefix.
    assert command["network"].keys() == reference.keys()
    assert _largest_difference(command["network"], reference) < TOLERANCE
    assert _largest_difference(command["network"], alone) > 100 * TOLERANCE
    for key, value in command["network"].items():
        assert torch.equal(value, resumed["network"][key]), key

    records = _records(tmp_path / "ranks/command/log.jsonl")
    assert [r["event"] for r in records].count("data") == 1
    assert [r["step"] for r in records if r["event"] == "checkpoint"] == [2, 4]
    assert [r["step"] for r in records if r["event"] == "validation"] == [0, 2, 4]
    assert load_network(tmp_path / "ranks/command/best.pt").config == TINY_NETWORK
    assert len(list((tmp_path / "ranks/scan_cache").glob("*.json"))) == 4  # three training scans, one validation
    rank_zero = _records(tmp_path / "ranks/resumed_log_rank0.jsonl")
    assert [r["event"] for r in rank_zero].count("resumed") == 1
    # Rank 0 had an hour left, and stopped at rank 1's step all the same.
    assert rank_zero[-1] == {"event": "time limit", "step": 1, "steps": STEPS}
    assert torch.load(tmp_path / "ranks/timed" / CHECKPOINT, weights_only=False)["step"] == 1
    assert not (tmp_path / "ranks/resumed_log_rank1.jsonl").exists()


def _start_train_sbatch(tmp_path: Path) -> subprocess.Popen:
    """train.sbatch as SLURM would start it on 2 nodes of 4 GPUs, with stand-ins for srun and torchrun."""
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, body in FAKES.items():
        (fakes / name).write_text(f"#!/bin/bash\n{body}\n")
        (fakes / name).chmod(0o755)
    environment = {**os.environ, "PATH": f"{fakes}:{os.environ['PATH']}", "RECORD": str(tmp_path),
                   "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "node[01-02]", "SLURM_NNODES": "2",
                   "SLURM_GPUS_ON_NODE": "4"}
    return subprocess.Popen(["bash", str(TRAIN_SBATCH), "/data", "/runs/v2", "--steps", "20000"], env=environment,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)


def test_train_sbatch_starts_torchrun_on_every_node_and_requeues_before_the_time_limit(tmp_path):
    text = TRAIN_SBATCH.read_text()
    assert subprocess.run(["bash", "-n", str(TRAIN_SBATCH)], check=False).returncode == 0
    assert "#SBATCH --requeue\n" in text and "#SBATCH --signal=B:USR1@120\n" in text
    job = _start_train_sbatch(tmp_path)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "torchrun").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)
        job.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 does 120 s before the limit
        job.wait(timeout=10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    assert (tmp_path / "scontrol").read_text().split() == ["requeue", "4242"]
    arguments = (tmp_path / "torchrun").read_text().split("\n")[:-1]
    command = arguments.index("MRIDenoiseLib.cli")
    assert arguments[:command] == ["--nnodes", "2", "--nproc_per_node", "4", "--rdzv_id", "4242", "--rdzv_backend",
                                   "c10d", "--rdzv_endpoint", "node01:29500", "-m"]
    # The requeued job runs this same command on the same run folder: train resumes from its checkpoint.
    options = build_parser().parse_args(arguments[command + 1:])
    assert (options.data_dir, options.out_dir, options.steps, options.device) == ("/data", "/runs/v2", 20000, "cuda")
    assert options.scan_cache == "/runs/v2/scan_cache"


if __name__ == "__main__":
    _ranks_main(*map(Path, sys.argv[1:4]))
