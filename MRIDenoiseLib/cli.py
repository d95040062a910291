"""The ``mridenoise`` command: denoise, demo, evaluate, train.

Errors a user can fix (bad input, missing weights) print one line on stderr and exit 2; nothing is
written. Progress bars go to stderr and ``--quiet`` silences everything but errors.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .process_memory import reuse_freed_memory

EXIT_USAGE = 2
EXIT_CANCELLED = 130


class Reporter:
    """Prints lines and per-stage progress bars unless quiet."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self._bar, self._stage = None, None

    def line(self, text: str) -> None:
        self.close()
        if not self.quiet:
            print(text, flush=True)

    def progress(self, stage: str, fraction: float) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=100, desc=f"{stage:>16}", file=sys.stderr, leave=False,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
        self._bar.update(round(100 * fraction) - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._stage = None, None


def _shard_spec(text: str) -> tuple[int, int]:
    """``INDEX/COUNT`` as two integers.

    >>> _shard_spec("3/10")
    (3, 10)
    """
    index, _, count = text.partition("/")
    try:
        return int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected INDEX/COUNT such as 3/10, not {text!r}") from None


def _denoise(args: argparse.Namespace) -> int:
    from .batch import batch_inputs, denoise_batch, denoise_file, shard
    from .io import InputError

    reporter = Reporter(args.quiet)
    options = dict(bias_correction=not args.no_n4, device=args.device, sigma=args.sigma,
                   volume=args.volume, weights=args.weights, preserve_detail=args.preserve_detail,
                   thorough=args.thorough, noise_map=args.noise_map)
    inputs = batch_inputs(args.input)
    if inputs is None and args.shard:
        raise InputError("--shard splits a batch (a folder or a .txt list), not one scan")
    if inputs is None:
        denoise_file(args.input, args.output, save_bias=args.save_bias, save_residual=args.save_residual,
                     save_noise_map=args.save_noise_map, reporter=reporter, **options)
        return 0
    if args.save_bias or args.save_residual or args.save_noise_map:
        raise InputError("--save-bias, --save-residual and --save-noise-map take one scan, not a batch")
    if args.shard:
        inputs = shard(inputs, *args.shard)
    summary = denoise_batch(inputs, args.output, reporter=reporter, **options)
    for failure in summary["failed"]:
        print(f"mridenoise: error: {failure}", file=sys.stderr)
    claimed = f", {summary['claimed']} being denoised by another process" if summary["claimed"] else ""
    reporter.line(f"denoised {summary['denoised']}, skipped {summary['skipped']} already done{claimed}, "
                  f"failed {len(summary['failed'])}; outputs in {args.output}")
    return EXIT_USAGE if summary["failed"] else 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(Path(args.output_dir), noise_percent=args.noise, device=args.device, reporter=Reporter(args.quiet))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import evaluate_files

    rows = evaluate_files(args.reference, args.results, mask_path=args.mask)
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        width = max(len(row["result"]) for row in rows)
        print(f"{'result':<{width}}  PSNR (dB)  SSIM")
        for row in rows:
            print(f"{row['result']:<{width}}  {row['psnr']:9.2f}  {row['ssim']:.4f}")
    return 0


def _check_training_options(args: argparse.Namespace) -> None:
    """Options that cannot make a run, refused before anything is loaded (the patch size, once the network is known)."""
    from .io import InputError

    counts = {"--steps": args.steps, "--scans-per-step": args.scans_per_step, "--patches-per-scan": args.patches_per_scan,
              "--checkpoint-every": args.checkpoint_every, "--validate-every": args.validate_every}
    for option, value in counts.items():
        if value < 1:
            raise InputError(f"{option} must be at least 1, not {value}")
    if args.lr <= 0:
        raise InputError(f"--lr must be above 0, not {args.lr}")
    if args.workers < 0:
        raise InputError(f"--workers must be 0 or more, not {args.workers}")
    if args.time_limit is not None and args.time_limit <= 0:
        raise InputError(f"--time-limit must be above 0 minutes, not {args.time_limit}")


def _train(args: argparse.Namespace) -> int:
    import torch

    from .io import InputError
    from .model import DEFAULT_WEIGHTS, load_network
    from .network import NetworkConfig
    from .training import distributed
    from .training.loop import TrainConfig, train_from_folder

    # Counted from the command's start: loading the scans takes part of a lent machine's time too.
    deadline = None if args.time_limit is None else time.monotonic() + 60 * args.time_limit
    _check_training_options(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    init = None
    if args.warm_start or args.init_weights:  # naming weights to start from is a warm start
        init = Path(args.init_weights) if args.init_weights else DEFAULT_WEIGHTS
    config = TrainConfig(steps=args.steps, learning_rate=args.lr, patch=args.patch, seed=args.seed,
                         validate_every=args.validate_every, checkpoint_every=args.checkpoint_every,
                         scans_per_step=args.scans_per_step, patches_per_scan=args.patches_per_scan,
                         workers=args.workers, loss=args.loss, smoothing_augmentation=not args.no_smoothing_augmentation,
                         noise_only=args.noise_only, lesions=args.lesions, objective=args.objective)
    if init is not None:
        config.network = load_network(init).config.to_dict()
    if args.correction_in_guide:
        config.network["correction_in_guide"] = True
    multiple = NetworkConfig.from_dict(config.network).size_multiple
    if args.patch < multiple or args.patch % multiple:
        raise InputError(f"--patch must be a multiple of {multiple} (the network's size multiple), not {args.patch}")
    out = Path(args.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.jsonl").open("a").close()
    except OSError as error:
        raise InputError(f"{out}: cannot write the run folder there ({error.strerror})") from None

    def log(record: dict) -> None:
        # Only rank 0 logs (see training.loop), so one process appends to log.jsonl.
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
        with open(out / "log.jsonl", "a") as log_file:
            log_file.write(json.dumps(record) + "\n")
        if not args.quiet:
            print(json.dumps(record), flush=True)

    with distributed.process_group(args.device):
        train_from_folder(args.data_dir, out, config, init_weights=init, log=log, device=args.device,
                          scan_cache=args.scan_cache, deadline=deadline)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mridenoise", description="Remove Rician noise and bias field from MRI volumes.")
    commands = parser.add_subparsers(dest="command", required=True)

    denoise = commands.add_parser("denoise", help="denoise (and bias-correct) one scan or a batch")
    denoise.add_argument("input", help="NIfTI, NRRD, MHA file or DICOM series folder; or, for a batch, "
                                       "a folder of such files or a .txt list of paths")
    denoise.add_argument("output", help="output file (.nii.gz, .nrrd, .mha ...); for a batch, an output "
                                        "folder (scans already done there are skipped)")
    denoise.add_argument("--no-n4", action="store_true", help="skip N4 bias-field correction")
    denoise.add_argument("--preserve-detail", action="store_true",
                         help="give back what denoising took from each 3x3x3 neighbourhood's mean: faint lesions "
                              "keep more contrast, a little noise stays (see BENCHMARKS.md)")
    denoise.add_argument("--thorough", action="store_true",
                         help="search wider for the groups of similar 4x4x4 windows the Wiener filter averages: a little "
                              "higher PSNR, on a CPU about 1.4 times the time; faint lesions keep more with --preserve-detail "
                              "too (see BENCHMARKS.md)")
    denoise.add_argument("--noise-map", action="store_true",
                         help="where the noise level varies across the image (parallel imaging, coil arrays), denoise "
                              "against a smooth map of it estimated from the image; where it looks uniform one sigma "
                              "is used, as without this option (see README.md)")
    denoise.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    denoise.add_argument("--save-bias", metavar="FILE", help="also write the estimated bias field")
    denoise.add_argument("--save-residual", metavar="FILE", help="also write input minus denoised (the removed noise)")
    denoise.add_argument("--save-noise-map", metavar="FILE",
                         help="also write the noise sigma denoising assumed at each voxel (with --noise-map, the map)")
    denoise.add_argument("--sigma", type=float, help="noise sigma in the input's units (default: estimated)")
    denoise.add_argument("--volume", type=int, help="for a 4-D input, the index of the volume to denoise (its noise "
                         "sigma is then also estimated from the series' consecutive differences, and the lower used)")
    denoise.add_argument("--weights", help="network weights file, for --preserve-detail (default: the bundled model)")
    denoise.add_argument("--shard", type=_shard_spec, metavar="INDEX/COUNT",
                         help="for a batch, denoise only every COUNT-th scan of the sorted list, from "
                              "number INDEX (0 to COUNT-1): one shard per task of a job array")
    denoise.add_argument("--quiet", action="store_true", help="print nothing but errors")
    denoise.set_defaults(run=_denoise)

    demo = commands.add_parser("demo", help="denoise the MNI152 T1 template with known noise and bias added")
    demo.add_argument("--output-dir", default="mridenoise_demo")
    demo.add_argument("--noise", type=float, default=5.0, help="Rician sigma, percent of the maximum (default 5)")
    demo.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    demo.add_argument("--quiet", action="store_true")
    demo.set_defaults(run=_demo)

    evaluate = commands.add_parser("evaluate", help="PSNR and SSIM of results against a reference, inside the head")
    evaluate.add_argument("reference")
    evaluate.add_argument("results", nargs="+")
    evaluate.add_argument("--mask", help="mask file (default: head mask of the reference)")
    evaluate.add_argument("--json", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    train = commands.add_parser("train", help="train the network on a folder of clean scans (long; not for CI)")
    train.add_argument("data_dir")
    train.add_argument("out_dir", help="run folder: checkpoint.pt, best.pt, log.jsonl; an existing run resumes")
    train.add_argument("--steps", type=int, default=1500)
    train.add_argument("--lr", type=float, default=5e-4)
    train.add_argument("--patch", type=int, default=48)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--scans-per-step", type=int, default=1, help="scans drawn per step (per process)")
    train.add_argument("--patches-per-scan", type=int, default=4)
    train.add_argument("--workers", type=int, default=0, help="processes preparing batches ahead (0: in the training process)")
    train.add_argument("--loss", choices=["l1", "l2"], default="l1", help="in units of the noise sigma (l2: of its square)")
    train.add_argument("--objective", choices=["network", "step"], default="network",
                       help="what the loss and the validation score: the network's output, or the default's grouped "
                            "step with the network's output as its pilot")
    train.add_argument("--no-smoothing-augmentation", action="store_true", help="no random zoom or point-spread blur")
    train.add_argument("--noise-only", action="store_true",
                       help="the scans as they are, cropped, flipped and turned, with noise: no zoom, blur, contrast "
                            "remap, bias field or thick slices")
    train.add_argument("--lesions", action="store_true",
                       help="insert small synthetic lesions into the training patches and weigh them 30x in the loss")
    train.add_argument("--correction-in-guide", action="store_true",
                       help="the network's correction shifts the stage-two guide instead of the output")
    train.add_argument("--validate-every", type=int, default=500)
    train.add_argument("--checkpoint-every", type=int, default=200)
    train.add_argument("--warm-start", action="store_true", help="start from the bundled weights (or --init-weights)")
    train.add_argument("--init-weights", help="weights file to warm-start from")
    train.add_argument("--time-limit", type=float, metavar="MINUTES",
                       help="stop at the first step after this many minutes (validated and checkpointed there: "
                            "the same command carries on)")
    train.add_argument("--threads", type=int, help="torch CPU threads")
    train.add_argument("--scan-cache", metavar="DIR",
                       help="prepare the scans once into DIR (uncompressed, about 6.5 MB per 2 mm scan) and memory-map them "
                            "instead of loading them into every process: restarts in seconds, one copy per node; "
                            "for large archives, several runs may share it")
    train.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(run=_train)
    return parser


@contextmanager
def _collector_paused():
    """Import torch, SimpleITK and their dependencies without the cyclic garbage collector.

    They create hundreds of thousands of objects that live as long as the process; the collector
    would scan them again and again while they import and once more when the process exits
    (about 1.3 s of a 10 s denoising in all). Frozen, it leaves them out of every later scan.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _exit_on_terminate(signum: int, frame) -> None:
    """SIGTERM (a SLURM time limit, ``kill``) exits through Python, so temporary outputs are removed."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    reuse_freed_memory()
    with _collector_paused():
        from .inference import Cancelled, DeviceUnavailable
        from .io import InputError
        from .model import WeightsError
    # Python lets only the main thread set handlers; called from another thread, SIGTERM stays as it is.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, _exit_on_terminate) if in_main_thread else None
    try:
        return args.run(args)
    except (InputError, WeightsError, DeviceUnavailable, FileNotFoundError) as error:
        print(f"mridenoise: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyboardInterrupt, Cancelled):
        print("mridenoise: cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


if __name__ == "__main__":
    sys.exit(main())
