import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import TINY_NETWORK, phantom

from MRIDenoiseLib import inference
from MRIDenoiseLib.inference import Cancelled, denoise_volume, window_count, window_size
from MRIDenoiseLib.model import load_network, save_weights
from MRIDenoiseLib.network import DenoiserNet
from MRIDenoiseLib.noise import add_rician_noise


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    return load_network(tiny_weights)


@pytest.fixture(scope="module")
def noisy():
    return add_rician_noise(phantom((40, 52, 36)), 6.0, np.random.default_rng(3))


def test_same_output_for_the_same_input_on_cpu(tiny, noisy):
    first = denoise_volume(noisy, 6.0, tiny, "cpu", window=32)
    second = denoise_volume(noisy.copy(), 6.0, tiny, "cpu", window=32)
    assert np.array_equal(first, second)
    assert first.shape == noisy.shape and first.dtype == np.float32


def test_progress_counts_every_window_and_ends_at_one(tiny, noisy):
    roi = window_size(noisy.shape, tiny.config.size_multiple, 32)
    expected = window_count(noisy.shape, roi, 0.25)
    assert expected == 2 * 2 * 2
    seen = []
    denoise_volume(noisy, 6.0, tiny, "cpu", window=32, progress=seen.append)
    assert len(seen) == expected and seen[-1] == 1.0 and seen == sorted(seen)


def test_thin_axes_are_padded_only_to_the_next_multiple():
    assert window_size((181, 217, 24), 4, 256) == (184, 220, 24)
    assert window_size((1, 300, 64), 4, 256) == (4, 256, 64)


def test_cancel_stops_inside_the_sliding_window(tiny, noisy):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        denoise_volume(noisy, 6.0, tiny, "cpu", window=32, cancel=cancel)
    assert len(calls) == 3


def test_gpu_out_of_memory_falls_back_to_cpu(tiny, noisy, monkeypatch):
    real = inference._run_on_device

    def fake(volume, sigma, network, device, *args):
        if device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
        return real(volume, sigma, network, device, *args)

    monkeypatch.setattr(inference, "_run_on_device", fake)
    notes = []
    result = denoise_volume(noisy, 6.0, tiny, torch.device("cuda"), window=32, on_fallback=notes.append)
    assert result.shape == noisy.shape
    assert len(notes) == 1 and "running on the CPU" in notes[0]


def test_output_is_in_the_input_units(tiny, noisy):
    # The normalisation is undone exactly: scaling the input by k scales the output by k
    # (the noise level scales with it), up to float32 rounding, which the exponential
    # similarity weights and the square root of the Rician-debiased second moment amplify in a
    # few voxels: no voxel may move by more than 1e-4 of the image's maximum.
    base = denoise_volume(noisy, 6.0, tiny, "cpu", window=64)
    scaled = denoise_volume(noisy * 1000.0, 6000.0, tiny, "cpu", window=64)
    np.testing.assert_allclose(scaled, base * 1000.0, rtol=5e-3, atol=1e-4 * float(scaled.max()))


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="unknown device"):
        inference.resolve_device("tpu")


def test_correction_in_the_guide_keeps_the_output_an_average_of_input_voxels(tmp_path):
    torch.manual_seed(0)
    config = dataclasses.replace(TINY_NETWORK, correction_in_guide=True)
    network = load_network(save_weights(DenoiserNet(config), tmp_path / "guide.pt"))
    assert network.config.correction_in_guide
    image = torch.rand(1, 1, 16, 16, 16) + 0.5
    sigma = torch.tensor([0.05])
    with torch.no_grad():
        network.correction_gain.fill_(0.0)
        plain = network(image, sigma)
        network.correction_gain.fill_(5.0)
        steered = network(image, sigma)
    assert (steered - plain).abs().max() > 1e-3
    # sqrt(mean of squared inputs - 2 sigma^2) can exceed no input voxel
    assert steered.max() <= image.max() and steered.min() > 0


def test_gpu_window_covers_any_volume_in_multiples_of_the_network_size():
    for shape in ((181, 217, 181), (256, 256, 20), (97, 113, 1)):
        window = inference.gpu_window(shape, 16, 80 * 1024**3)
        roi = window_size(shape, 16, window)
        assert all(r % 16 == 0 and r >= n for r, n in zip(roi, shape)), (shape, roi)
        assert window_count(shape, roi, 0.25) == 1


def test_one_window_gives_what_monais_sliding_window_gives(tiny, noisy):
    from monai.inferers import SlidingWindowInferer

    image = torch.from_numpy(noisy[:37, :50, :33] / 100.0)[None, None].float()
    roi = window_size(image.shape[2:], tiny.config.size_multiple)
    assert inference.fits_one_window(image.shape[2:], roi) and roi == (40, 56, 40)

    def predictor(windows):
        return tiny(windows, torch.tensor([0.06]))

    with torch.inference_mode():
        ours = inference.predict_one_window(image, roi, predictor)
        theirs = SlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=0.25, mode="gaussian")(image, predictor)
    assert ours.shape == image.shape and ours.is_contiguous()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_denoising_a_volume_that_fits_one_window_never_imports_monai(tiny_weights):
    script = (
        "import sys, numpy as np\n"
        "from MRIDenoiseLib.inference import denoise_volume\n"
        "from MRIDenoiseLib.model import load_network\n"
        "volume = np.random.default_rng(0).random((20, 24, 9)).astype(np.float32) * 100\n"
        f"denoise_volume(volume, 5.0, load_network({str(tiny_weights)!r}), 'cpu')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] == 'monai'))\n"
    )
    finished = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert finished.stdout.strip() == "[]"
