"""Tests of the deterministic speech-like test signal."""

from __future__ import annotations

import numpy as np
import torch
from scipy.signal import find_peaks

from audiodiff.ddsp import speech_like, speech_like_with_f0

SR = 16000


def test_deterministic_under_seed_and_batched():
    a = speech_like(1.0, SR, seed=3)
    b = speech_like(1.0, SR, seed=3)
    c = speech_like(1.0, SR, seed=4)
    assert a.shape == (SR,)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3
    batch = speech_like(1.0, SR, seed=[4, 3])
    assert batch.shape == (2, SR)
    torch.testing.assert_close(batch[1], a, rtol=0, atol=0)
    torch.testing.assert_close(batch[0], c, rtol=0, atol=0)


def test_energy_is_in_the_speech_band():
    sig = speech_like_with_f0(2.0, SR, seed=0)
    x = sig.audio.double().numpy()
    assert np.isfinite(x).all() and 0.05 < x.std() < 0.2
    power = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    band = power[(freqs >= 100) & (freqs <= 4000)].sum()
    assert band > 0.9 * power.sum()
    voiced = sig.f0_hz[sig.voiced]
    assert 0.3 < sig.voiced.float().mean() < 0.95
    assert voiced.min() >= 100 and voiced.max() <= 220
    assert torch.all(sig.f0_hz[~sig.voiced] == 0)


def _voiced_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each contiguous run of True in a 1-D boolean mask."""
    edges = np.diff(np.r_[0, mask.astype(int), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _harmonic_power(x: np.ndarray, f0: np.ndarray, mask: np.ndarray, n_harm: int) -> float:
    """Mean power of x captured by demodulating each voiced run along the phase track of f0.

    A sinusoid of amplitude A that follows the track contributes |A / 2|^2 per harmonic.
    """
    total = 0.0
    for lo, hi in _voiced_runs(mask):
        phase = 2 * np.pi * np.cumsum(f0[lo:hi]) / SR
        for k in range(1, n_harm + 1):
            total += (hi - lo) * np.abs(np.mean(x[lo:hi] * np.exp(-1j * k * phase))) ** 2
    return total / mask.sum()


def test_voiced_segments_are_harmonic_at_the_reported_f0():
    for seed in (0, 1):
        sig = speech_like_with_f0(2.0, SR, seed=seed)
        x, mask = sig.audio.double().numpy(), sig.voiced.numpy()
        f0 = sig.f0_hz.double().numpy()
        on_track = _harmonic_power(x, f0, mask, 25)
        # Harmonics 1-25 along the reported f0 carry most of the voiced power (a sinusoid's
        # demodulated power is half its power) ...
        assert on_track > 0.4 * np.mean(x[mask] ** 2)
        # ... and only at the reported f0: a 3 % detuned track captures far less.
        for detune in (0.97, 1.03):
            assert on_track > 20 * _harmonic_power(x, detune * f0, mask, 25)
    # A spectral view of the longest voiced run: the strongest peaks below 2 kHz sit at
    # multiples of the reported f0.
    sig = speech_like_with_f0(2.0, SR, seed=0)
    lo, hi = max(_voiced_runs(sig.voiced.numpy()), key=lambda run: run[1] - run[0])
    mid = (lo + hi) // 2
    seg = sig.audio[mid - 800 : mid + 800].double().numpy()  # 100 ms
    f0_mean = sig.f0_hz[mid - 800 : mid + 800].double().mean().item()
    n_fft = 16 * len(seg)
    spec = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), n=n_fft))
    freqs = np.fft.rfftfreq(n_fft, 1 / SR)
    peaks, _ = find_peaks(np.where(freqs < 2000, spec, 0.0))
    for peak in freqs[peaks[np.argsort(spec[peaks])[-4:]]]:
        k = max(1, round(peak / f0_mean))
        assert abs(peak - k * f0_mean) < 0.03 * f0_mean, (peak, f0_mean)
