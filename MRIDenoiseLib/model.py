"""Bundled weights: saving them small (float16) with a sha256, and loading them only if it matches.

>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> path = save_weights(DenoiserNet(), folder / "w.pt")
>>> load_network(path).config == NetworkConfig()
True
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from .network import DenoiserNet, NetworkConfig

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "mridenoise_v1.pt"


class WeightsError(RuntimeError):
    """The weights file is missing, damaged or does not match its checksum."""


def sha256_of(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_path(weights: Path | str) -> Path:
    return Path(str(weights) + ".sha256")


def save_weights(network: DenoiserNet, path: Path | str) -> Path:
    """Write float16 weights and their ``.sha256`` beside them; returns the weights path."""
    path = Path(path)
    state = {key: value.detach().to("cpu", torch.float16) for key, value in network.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"config": network.config.to_dict(), "state_dict": state}, buffer)
    # Both files are written first and renamed back to back, so a run stopped here leaves at most
    # new weights beside the old checksum for an instant, never a half-written file.
    temporary, temporary_sum = path.with_name(path.name + ".tmp"), checksum_path(path).with_suffix(".sha256.tmp")
    temporary.write_bytes(buffer.getvalue())
    temporary_sum.write_text(f"{hashlib.sha256(buffer.getvalue()).hexdigest()}  {path.name}\n")
    os.replace(temporary, path)
    os.replace(temporary_sum, checksum_path(path))
    return path


def load_network(path: Path | str = DEFAULT_WEIGHTS) -> DenoiserNet:
    """Build the network its weights file describes; the sha256 is checked first."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    sums = checksum_path(path)
    if not sums.is_file():
        raise WeightsError(f"checksum file not found beside the weights: {sums}")
    expected = sums.read_text().split()[0]
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsError(f"weights checksum mismatch for {path.name}: expected {expected[:12]}…, got {actual[:12]}… "
                           "(damaged or replaced file)")
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True)
        network = DenoiserNet(NetworkConfig.from_dict(bundle["config"]))
        network.load_state_dict({key: value.float() for key, value in bundle["state_dict"].items()})
    except Exception as error:  # its checksum matches, yet it is no weights file of this network
        raise WeightsError(f"{path.name}: not a weights file of this network ({type(error).__name__})") from None
    return network.eval()
