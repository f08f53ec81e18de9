"""Tests of the DDSP harmonic and filtered-noise synthesisers against independent spectra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal as sps

from audiodiff.ddsp import (
    HarmonicConfig,
    MultiScaleSpectralLoss,
    exp_sigmoid,
    filtered_noise,
    frequency_impulse_response,
    harmonic_synth,
    upsample,
)

SR = 16000


def _spectrum(x: torch.Tensor) -> np.ndarray:
    """Hann-windowed magnitude spectrum of a 1-D signal, 1 Hz bins for a 1 s signal at SR."""
    y = x.detach().double().numpy()
    return np.abs(np.fft.rfft(y * np.hanning(len(y))))


def _constant_controls(f0: float, dist: list[float], n_frames: int = 20):
    f0_t = torch.full((1, n_frames), f0)
    amp = torch.ones(1, n_frames)
    hd = torch.tensor(dist).expand(1, n_frames, -1).clone()
    return f0_t, amp, hd


def test_exp_sigmoid_range_and_formula():
    x = torch.linspace(-20, 20, 101)
    y = exp_sigmoid(x)
    expected = 2.0 / (1.0 + torch.exp(-x)) ** math.log(10.0) + 1e-7
    torch.testing.assert_close(y, expected)
    assert y.min() > 0 and y.max() < 2.0 + 1e-6


def test_upsample_hits_frames_and_is_exact_on_ramps():
    frames = torch.tensor([[0.0, 3.0, -1.0, 2.0]])
    n = 301  # frames land on samples 0, 100, 200, 300
    for method in ("linear", "hann"):
        up = upsample(frames, n, method)
        assert up.shape == (1, n)
        torch.testing.assert_close(up[0, ::100], frames[0])
    ramp = torch.arange(5.0)[None, :, None]  # (1, F, 1)
    torch.testing.assert_close(upsample(ramp, 9, "linear")[0, :, 0], torch.arange(9.0) / 2)
    const = torch.full((2, 7, 3), 0.7)
    torch.testing.assert_close(upsample(const, 1000, "hann"), torch.full((2, 1000, 3), 0.7))


def test_hann_upsampling_equals_overlap_added_hann_windows():
    frames = torch.tensor([[1.0, -2.0, 0.5, 3.0, 0.0]])
    hop, n = 40, 161  # frames at samples 0, 40, ..., 160
    t = np.arange(n)[:, None] - hop * np.arange(5)[None, :]  # (T, F) offset from each frame
    windows = np.where(np.abs(t) < hop, 0.5 + 0.5 * np.cos(np.pi * t / hop), 0.0)
    expected = windows @ frames[0].double().numpy()
    np.testing.assert_allclose(upsample(frames, n, "hann")[0].numpy(), expected, atol=1e-5)


def test_harmonic_peaks_at_multiples_of_off_bin_f0():
    f0 = 237.37  # 1 Hz bins: deliberately between bin centres
    dist = [1.0 / k for k in range(1, 9)]
    audio = harmonic_synth(*_constant_controls(f0, dist), SR, HarmonicConfig(sample_rate=SR))
    assert audio.shape == (1, SR)
    spec = _spectrum(audio[0])
    peaks, _ = sps.find_peaks(spec, height=spec.max() * 1e-3)
    top = np.sort(peaks[np.argsort(spec[peaks])[-8:]])
    np.testing.assert_allclose(top, f0 * np.arange(1, 9), atol=1.0)
    # relative peak heights follow the requested (normalised) distribution
    heights = spec[np.round(f0 * np.arange(1, 9)).astype(int)]
    np.testing.assert_allclose(heights / heights[0], np.array(dist) / dist[0], rtol=0.1)


def test_harmonics_at_or_above_nyquist_are_removed():
    f0 = 3000.0  # at 16 kHz only 3 and 6 kHz fit below Nyquist
    audio = harmonic_synth(*_constant_controls(f0, [1.0] * 10), SR, HarmonicConfig(sample_rate=SR))
    spec = _spectrum(audio[0]) ** 2
    freqs = np.arange(len(spec))
    near = (np.abs(freqs - 3000) <= 3) | (np.abs(freqs - 6000) <= 3)
    assert spec[~near].sum() < 1e-9 * spec.sum()
    # aliases of 9, 12, 15, 18, 21 kHz would land at 7, 4, 1, 2, 5 kHz
    for alias in (7000, 4000, 1000, 2000, 5000):
        assert spec[alias - 3 : alias + 4].max() < 1e-9 * spec.max()
    # distribution re-normalised over the two surviving harmonics: amplitude 0.5 each
    rms = audio[0].square().mean().sqrt().item()
    assert rms == pytest.approx(math.sqrt(2 * 0.5**2 / 2), rel=1e-3)


def test_harmonic_synth_batched_scale_fn_and_gradients():
    n_frames, n_harm = 10, 6
    f0 = torch.tensor([[200.0], [310.0]]).expand(2, n_frames)
    amp_raw = torch.zeros(2, n_frames, requires_grad=True)
    hd_raw = torch.zeros(2, n_frames, n_harm, requires_grad=True)
    cfg = HarmonicConfig(sample_rate=SR, scale_fn=exp_sigmoid)
    audio = harmonic_synth(f0, amp_raw, hd_raw, 4000, cfg)
    assert audio.shape == (2, 4000)
    single = harmonic_synth(f0[1:], amp_raw[1:], hd_raw[1:], 4000, cfg)
    torch.testing.assert_close(audio[1:], single)
    audio.square().sum().backward()
    assert torch.isfinite(amp_raw.grad).all() and amp_raw.grad.abs().sum() > 0
    assert torch.isfinite(hd_raw.grad).all() and hd_raw.grad.abs().sum() > 0


def test_initial_phase_shifts_the_waveform():
    f0, amp, hd = _constant_controls(500.0, [1.0])
    phase = torch.tensor([[math.pi / 2]])
    audio = harmonic_synth(f0, amp, hd, 1000, HarmonicConfig(sample_rate=SR), phase)
    n = torch.arange(1000, dtype=torch.float64)
    expected = torch.cos(2 * math.pi * 500.0 * (n + 1) / SR)  # phase accumulates from sample 0
    torch.testing.assert_close(audio[0].double(), expected, atol=1e-5, rtol=0)


def _response_db(freqs: np.ndarray) -> np.ndarray:
    """A smooth target response in dB: spectral tilt plus a broad resonance at 2 kHz."""
    return -30.0 * (freqs / (SR / 2)) ** 2 + 10.0 * np.exp(-0.5 * ((freqs - 2000.0) / 700.0) ** 2)


def test_frequency_impulse_response_is_linear_phase():
    mags = torch.rand(3, 33) + 0.1
    ir = frequency_impulse_response(mags)  # (3, 64), centre tap 32
    torch.testing.assert_close(ir[:, 1:32], ir[:, 33:].flip(-1))
    assert ir.shape == (3, 64) and torch.all(ir[:, 0] == 0)


def test_filtered_noise_follows_magnitude_response():
    n_bands, n_frames, hop = 129, 1000, 128
    band_freqs = np.linspace(0, SR / 2, n_bands)
    mag = torch.tensor(10 ** (_response_db(band_freqs) / 20), dtype=torch.float32)
    mags = mag.expand(4, n_frames, n_bands)
    gen = torch.Generator().manual_seed(1)
    out = filtered_noise(mags, n_frames * hop, generator=gen)
    assert out.shape == (4, n_frames * hop)
    freqs, psd = sps.welch(out.double().numpy(), fs=SR, nperseg=512, axis=-1)
    psd = psd.mean(axis=0)
    white = 2 * (1.0 / 3.0) / SR  # one-sided density of uniform[-1, 1] noise (variance 1/3)
    measured_db = 10 * np.log10(psd / white)
    target_db = _response_db(freqs)
    sel = (target_db > -40) & (freqs > 0) & (freqs < SR / 2)
    err = np.abs(measured_db - target_db)[sel]
    assert err.max() < 1.0, f"max deviation {err.max():.2f} dB"


def test_filtered_noise_is_time_varying_and_seeded():
    n_bands, hop = 65, 256
    low = torch.zeros(n_bands)
    low[:8] = 1.0  # low-pass
    high = torch.zeros(n_bands)
    high[-8:] = 1.0  # high-pass
    mags = torch.stack([low] * 20 + [high] * 20)[None]  # (1, 40, n_bands)
    out = filtered_noise(mags, 40 * hop, generator=torch.Generator().manual_seed(0))
    again = filtered_noise(mags, 40 * hop, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, again, rtol=0, atol=0)
    first, second = out[0, 2 * hop : 18 * hop], out[0, 22 * hop : 38 * hop]
    f_first, f_second = np.fft.rfftfreq(len(first), 1 / SR), np.abs(np.fft.rfft(second)) ** 2
    p_first = np.abs(np.fft.rfft(first)) ** 2
    assert p_first[f_first < 1000].sum() > 0.9 * p_first.sum()
    assert f_second[f_first > 7000].sum() > 0.9 * f_second.sum()


def test_filtered_noise_controls_are_aligned_with_the_output():
    hop, n_bands = 100, 33
    mags = torch.zeros(1, 40, n_bands)
    mags[:, 20:] = 1.0  # silent, then unfiltered noise from frame 20 (sample 2000) on
    out = filtered_noise(mags, 40 * hop, generator=torch.Generator().manual_seed(0))[0]
    assert out[: 20 * hop].abs().max() < 1e-6
    assert out[20 * hop : 20 * hop + 10].abs().min() > 1e-4
    assert out[20 * hop :].abs().max() <= 1.0 + 1e-5  # a flat response passes the noise as is
    assert out[20 * hop :].var().item() == pytest.approx(1.0 / 3.0, rel=0.1)


@pytest.fixture
def single_thread():
    """Run on one intra-op thread: tiny ops only lose time to thread hand-offs on a busy box."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_fit_recovers_amplitude_and_harmonic_distribution(single_thread):
    torch.manual_seed(0)
    n_frames, n_samples = 10, 4000
    f0 = torch.full((1, n_frames), 196.0)
    true_amp = 0.6
    true_dist = torch.tensor([0.35, 0.25, 0.18, 0.12, 0.07, 0.03])
    cfg = HarmonicConfig(sample_rate=SR)
    target = harmonic_synth(
        f0, torch.full((1, n_frames), true_amp), true_dist.expand(1, n_frames, -1), n_samples, cfg
    )
    amp_raw = torch.zeros(1, 1, requires_grad=True)
    dist_raw = torch.zeros(1, 1, 6, requires_grad=True)
    fit_cfg = HarmonicConfig(sample_rate=SR, scale_fn=exp_sigmoid)
    loss_fn = MultiScaleSpectralLoss(fft_sizes=(1024, 512, 256, 128))
    opt = torch.optim.Adam([amp_raw, dist_raw], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        pred = harmonic_synth(
            f0, amp_raw.expand(1, n_frames), dist_raw.expand(1, n_frames, -1), n_samples, fit_cfg
        )
        loss_fn(pred, target).mean().backward()
        opt.step()
    amp = exp_sigmoid(amp_raw).item()
    dist = exp_sigmoid(dist_raw)[0, 0]
    dist = dist / dist.sum()
    assert amp == pytest.approx(true_amp, rel=0.03)
    torch.testing.assert_close(dist.detach(), true_dist, atol=0.01, rtol=0)
