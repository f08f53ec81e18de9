"""Tests of the pure mixing functions: SNR, gain, noise fitting, reverberation, DDSP RIRs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audiodiff.data import mixing
from audiodiff.data.mixing import (
    apply_gain_db,
    ddsp_rir,
    estimate_rt60,
    fit_noise,
    mix_at_snr,
    random_ddsp_rir,
    reverberate,
    rms,
)

RATE = 16000


def speech_like(n: int, seed: int) -> np.ndarray:
    """Noise under a 3 Hz syllable envelope, float32 (n,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    return (rng.standard_normal(n) * np.abs(np.sin(2 * np.pi * 3 * t)) * 0.1).astype(np.float32)


def global_snr(speech: np.ndarray, noise: np.ndarray) -> float:
    s, n = speech.astype(np.float64), noise.astype(np.float64)
    return 10 * math.log10(np.sum(s**2) / np.sum(n**2))


def lag_of_peak(a: np.ndarray, b: np.ndarray) -> int:
    """Lag (samples) at which the cross-correlation of a and b peaks; 0 when aligned."""
    n = len(a) + len(b) - 1
    spec = np.fft.rfft(a.astype(np.float64), n) * np.conj(np.fft.rfft(b.astype(np.float64), n))
    corr = np.fft.irfft(spec, n)  # corr[k] = sum_t a[t + k] b[t], negative lags wrap to the end
    lag = int(np.argmax(corr))
    return lag if lag < len(a) else lag - n


def test_rms_and_gain():
    x = np.full(100, 0.5, dtype=np.float32)
    assert rms(x) == pytest.approx(0.5)
    assert rms(np.zeros(0)) == 0.0
    y = apply_gain_db(x, 6.0)
    assert y.dtype == np.float32
    assert rms(y) == pytest.approx(0.5 * 10 ** (6 / 20), rel=1e-6)
    assert 20 * math.log10(rms(apply_gain_db(x, -12.5)) / rms(x)) == pytest.approx(-12.5, abs=1e-4)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.3, 20.0, 35.0])
def test_mix_at_snr_realises_the_requested_snr(snr):
    clean = speech_like(8000, 0)
    noise = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 3.0
    noisy, scaled = mix_at_snr(clean, noise, snr)
    assert noisy.dtype == np.float32 and scaled.shape == clean.shape
    assert abs(global_snr(clean, scaled) - snr) < 0.1
    assert abs(global_snr(clean, noisy - clean) - snr) < 0.1  # noisy really is clean + noise
    ratio = scaled.astype(np.float64) / noise  # the noise is only scaled, not reshaped
    assert np.allclose(ratio, ratio[0], rtol=1e-5)


def test_mix_at_snr_rejects_silence_and_shape_mismatch():
    x = speech_like(1000, 0)
    with pytest.raises(ValueError, match="same shape"):
        mix_at_snr(x, x[:-1], 0.0)
    with pytest.raises(ValueError, match="all zeros"):
        mix_at_snr(np.zeros(1000, np.float32), x, 0.0)
    with pytest.raises(ValueError, match="all zeros"):
        mix_at_snr(x, np.zeros(1000, np.float32), 0.0)


def test_fit_noise_crops_long_and_loops_short_noise_deterministically():
    long = np.arange(10000, dtype=np.float32)
    crop = fit_noise(long, 3000, np.random.default_rng(0))
    assert crop.shape == (3000,) and np.all(np.diff(crop) == 1)  # one contiguous slice
    short = np.arange(700, dtype=np.float32)
    looped = fit_noise(short, 3000, np.random.default_rng(0))
    offset = int(looped[0])
    assert np.array_equal(looped, (offset + np.arange(3000)) % 700)
    again = fit_noise(short, 3000, np.random.default_rng(0))
    assert np.array_equal(looped, again)
    starts = {int(fit_noise(short, 3000, np.random.default_rng(s))[0]) for s in range(6)}
    assert len(starts) > 1  # the offset is random


@pytest.mark.parametrize("delay", [0, 37])
@pytest.mark.parametrize("target", ["dry", "early"])
def test_delta_rir_leaves_the_input_unchanged(delay, target):
    clean = speech_like(4000, 2)
    rir = np.zeros(500, dtype=np.float32)
    rir[delay] = 0.9  # peak-normalised like the shared RIRs; the direct path is rescaled to 1
    reverberant, tgt = reverberate(clean, rir, target=target)
    assert reverberant.shape == tgt.shape == clean.shape
    assert np.allclose(reverberant, clean, atol=1e-6)
    assert np.allclose(tgt, clean, atol=1e-6)


def _delayed_rir(delay: int, seed: int = 0) -> np.ndarray:
    """Silence, a direct path at ``delay``, then a decaying noise tail (0.3 s)."""
    rng = np.random.default_rng(seed)
    n_tail = int(0.3 * RATE)
    tail = rng.standard_normal(n_tail) * np.exp(-np.arange(n_tail) / (0.05 * RATE)) * 0.3
    return np.concatenate([np.zeros(delay), [0.8], tail]).astype(np.float32)


def test_early_target_is_aligned_with_the_reverberant_mixture():
    clean = speech_like(12000, 3)
    rir = _delayed_rir(delay=240)
    reverberant, early = reverberate(clean, rir, target="early", early_ms=50)
    assert lag_of_peak(reverberant, early) == 0
    assert lag_of_peak(early, clean) == 0
    _, dry = reverberate(clean, rir, target="dry")
    assert lag_of_peak(reverberant, dry) == 0
    assert not np.allclose(early, clean, atol=1e-3)  # early reflections are in the target


def test_early_target_keeps_reflections_within_early_ms_only():
    clean = speech_like(8000, 4)
    peak, at_30ms, at_80ms = 100, 100 + int(0.030 * RATE), 100 + int(0.080 * RATE)
    rir = np.zeros(2000, dtype=np.float64)
    rir[peak], rir[at_30ms], rir[at_80ms] = 2.0, 1.0, 0.5
    reverberant, early = reverberate(clean, rir, target="early", early_ms=50)
    shift_30, shift_80 = at_30ms - peak, at_80ms - peak
    expect_early = clean + 0.5 * np.concatenate([np.zeros(shift_30), clean[:-shift_30]])
    expect_wet = expect_early + 0.25 * np.concatenate([np.zeros(shift_80), clean[:-shift_80]])
    assert np.allclose(early, expect_early, atol=1e-6)
    assert np.allclose(reverberant, expect_wet, atol=1e-6)


def test_reverberate_rejects_bad_arguments():
    x = speech_like(100, 0)
    with pytest.raises(ValueError, match="target"):
        reverberate(x, np.ones(3), target="wet")
    with pytest.raises(ValueError, match="all zeros"):
        reverberate(x, np.zeros(3))


def test_ddsp_rir_is_deterministic_with_the_requested_decay():
    rir = ddsp_rir(0.5, 5.0, RATE, seed=7)
    assert rir.shape == (8000,) and rir.dtype == np.float32 and rir[0] == 1.0
    assert np.array_equal(rir, ddsp_rir(0.5, 5.0, RATE, seed=7))
    assert not np.array_equal(rir, ddsp_rir(0.5, 5.0, RATE, seed=8))
    drr = 10 * math.log10(1.0 / np.sum(rir[1:].astype(np.float64) ** 2))
    assert drr == pytest.approx(5.0, abs=0.01)
    assert estimate_rt60(rir, RATE) == pytest.approx(0.5, rel=0.15)


def test_random_ddsp_rir_draws_within_ranges():
    rir, rt60, drr = random_ddsp_rir(np.random.default_rng(0), (0.2, 0.4), (3.0, 6.0), RATE)
    assert 0.2 <= rt60 <= 0.4 and 3.0 <= drr <= 6.0
    assert rir.shape == (round(rt60 * RATE),)
    same = random_ddsp_rir(np.random.default_rng(0), (0.2, 0.4), (3.0, 6.0), RATE)
    assert np.array_equal(rir, same[0]) and same[1:] == (rt60, drr)


def test_estimate_rt60_of_an_exponential_decay():
    t = np.arange(int(1.5 * RATE)) / RATE
    rir = np.random.default_rng(0).standard_normal(t.size) * np.exp(-math.log(1000) * t / 0.7)
    assert estimate_rt60(rir, RATE) == pytest.approx(0.7, rel=0.1)
    assert math.isnan(estimate_rt60(np.zeros(10), RATE))


def test_segment_and_loudest_offset():
    x = np.arange(1, 11, dtype=np.float32)
    assert np.array_equal(mixing.segment(x, -2, 3), [0, 0, 1, 2, 3])
    assert np.array_equal(mixing.segment(x, 8, 12), [9, 10, 0, 0])
    y = np.zeros(1000, dtype=np.float32)
    y[600:650] = 1.0
    assert 550 <= mixing.loudest_offset(y, 100) <= 600
