import numpy as np
import pytest
import torch

from audiodiff.ddsp import speech_like
from audiodiff.spec import SpecConfig, Spectrogram, compress, decompress, num_frames


def speechish(length: int, seed: int = 0) -> torch.Tensor:
    """Deterministic speech-like audio from the DDSP harmonic-plus-noise generator."""
    return speech_like(length / 16000, seed=seed).float()


def test_defaults_are_sgmse_plus():
    cfg = SpecConfig()
    assert (cfg.n_fft, cfg.hop_length, cfg.window, cfg.alpha, cfg.beta) == (
        510,
        128,
        "hann",
        0.5,
        0.15,
    )
    assert cfg.num_freqs == 256


@pytest.mark.parametrize("length", [16000, 32640, 12345])
def test_round_trip_relative_error_below_1e5(length):
    spec = Spectrogram()
    wave = torch.stack([speechish(length, 0), speechish(length, 1)])
    X = spec.analyse(wave)
    assert X.shape == (2, 1, 256, num_frames(length, spec.config)) and X.is_complex()
    back = spec.synthesise(X, length=length)
    rel = (back - wave).norm() / wave.norm()
    assert rel < 1e-5


def test_compression_formula_and_exact_inverse():
    z = torch.randn(1000, dtype=torch.complex64)
    c = compress(z, 0.5, 0.15)
    assert torch.allclose(c.abs(), 0.15 * z.abs().sqrt(), rtol=1e-5)
    assert torch.allclose(torch.angle(c), torch.angle(z), atol=1e-5)
    assert torch.allclose(decompress(c, 0.5, 0.15), z, atol=1e-5)


def test_matches_reference_transform():
    # sgmse's data module: torch.stft(centre, periodic Hann), then |X|^e·e^{j∠X}·factor
    wave = speechish(8000)[None]
    window = torch.hann_window(510, periodic=True)
    X = torch.stft(wave, 510, 128, window=window, center=True, return_complex=True)
    expected = X.abs() ** 0.5 * torch.exp(1j * X.angle()) * 0.15
    ours = Spectrogram().analyse(wave)[:, 0]
    assert torch.allclose(ours, expected, atol=1e-6)


@pytest.mark.parametrize("frames,expected", [(1, 64), (64, 64), (65, 128), (250, 256)])
def test_pad_frames_to_multiple_of_64(frames, expected):
    spec = Spectrogram()
    X = torch.randn(2, 1, 256, frames, dtype=torch.complex64)
    padded = spec.pad_frames(X)
    assert padded.shape[-1] == expected
    assert torch.equal(padded[..., :frames], X)
    assert padded[..., frames:].abs().sum() == 0


def test_bad_config_raises():
    with pytest.raises(ValueError):
        SpecConfig(window="hamming")
    with pytest.raises(ValueError):
        SpecConfig.from_dict({"n_fft": 510, "hopp": 128})


def test_sqrthann_round_trip():
    spec = Spectrogram(SpecConfig(window="sqrthann"))
    wave = speechish(9000)[None]
    back = spec.synthesise(spec.analyse(wave), length=9000)
    assert np.allclose(back.numpy(), wave.numpy(), atol=1e-5)
