"""Deterministic speech-like test signals built from the DDSP synthesisers.

A source-filter caricature of speech (after the harmonic-plus-noise model of Engel et al. 2020,
"DDSP", Sec. 3): alternating voiced and unvoiced segments; voiced parts are a harmonic series on
a slowly moving f0 (100-220 Hz, declination, intonation and vibrato) with a -6 dB/octave tilt
shaped by three vowel formants, plus breath noise; unvoiced parts are noise shaped by three
fricative formant peaks. Everything is drawn from a CPU generator seeded per example, so a seed
gives the same signal on every device and in every batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from audiodiff.ddsp.synth import (
    HarmonicConfig,
    NoiseConfig,
    filtered_noise,
    harmonic_synth,
    upsample,
)

FRAME_RATE_HZ = 100
F0_RANGE_HZ = (100.0, 220.0)
_N_NOISE_BANDS = 65
_TARGET_RMS = 0.1
# (F1, F2, F3) in Hz for a handful of vowels and for fricative-like noise.
_VOWELS = (
    (730.0, 1090.0, 2440.0),
    (270.0, 2290.0, 3010.0),
    (300.0, 870.0, 2240.0),
    (530.0, 1840.0, 2480.0),
    (570.0, 840.0, 2410.0),
)
_FRICATIVES = ((2700.0, 4300.0, 6000.0), (1800.0, 3600.0, 5200.0))
_BANDWIDTHS_HZ = (90.0, 130.0, 180.0)


@dataclass(frozen=True)
class SpeechLike:
    """A speech-like signal and its ground truth, each (T,) or (B, T).

    ``f0_hz`` is the audio-rate fundamental of the harmonic part where ``voiced`` is True and 0
    elsewhere.
    """

    audio: torch.Tensor
    f0_hz: torch.Tensor
    voiced: torch.Tensor


def _formant_envelope(freqs: torch.Tensor, formants: torch.Tensor) -> torch.Tensor:
    """Sum of three Gaussian resonances at ``formants`` (F, 3) over ``freqs`` (F, N) -> (F, N)."""
    bw = torch.tensor(_BANDWIDTHS_HZ)
    dist = (freqs.unsqueeze(-1) - formants.unsqueeze(1)) / bw  # (F, N, 1) - (F, 1, 3) -> (F, N, 3)
    return torch.exp(-0.5 * dist.square()).sum(dim=-1)


def _segments(n_frames: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Voiced flag (F,) and segment id (F,) for alternating unvoiced / voiced segments."""
    voiced = torch.zeros(n_frames, dtype=torch.bool)
    seg_id = torch.zeros(n_frames, dtype=torch.long)
    start, index, is_voiced = 0, 0, False
    while start < n_frames:
        low, high = (15, 36) if is_voiced else (5, 16)
        length = int(torch.randint(low, high, (1,), generator=gen))
        voiced[start : start + length] = is_voiced
        seg_id[start : start + length] = index
        start, index, is_voiced = start + length, index + 1, not is_voiced
    return voiced, seg_id


def _f0_contour(n_frames: int, gen: torch.Generator) -> torch.Tensor:
    """f0 (F,) in Hz: declining base with phrase intonation and vibrato, clamped to 100-220 Hz."""
    u = torch.rand(5, generator=gen)
    t = torch.arange(n_frames, dtype=torch.float32) / FRAME_RATE_HZ
    base = 125.0 + 50.0 * u[0]
    declination = 1.0 - 0.15 * t / max(t[-1].item(), 1e-3)
    intonation = 1.0 + 0.06 * torch.sin(2 * math.pi * (0.5 + 0.5 * u[1]) * t + 6.28 * u[2])
    vibrato = 1.0 + 0.015 * torch.sin(2 * math.pi * (4.5 + u[3]) * t + 6.28 * u[4])
    return (base * declination * intonation * vibrato).clamp(*F0_RANGE_HZ)


def _one_example(n_samples: int, sample_rate: int, seed: int) -> SpeechLike:
    """Render one speech-like example (T,) with its audio-rate f0 (T,) and voicing (T,)."""
    gen = torch.Generator().manual_seed(seed)
    n_frames = max(2, round(n_samples / sample_rate * FRAME_RATE_HZ) + 1)
    voiced, seg_id = _segments(n_frames, gen)
    f0 = _f0_contour(n_frames, gen)
    n_segments = int(seg_id[-1]) + 1
    vowel = torch.randint(len(_VOWELS), (n_segments,), generator=gen)[seg_id]
    fric = torch.randint(len(_FRICATIVES), (n_segments,), generator=gen)[seg_id]
    loudness = (0.6 + 0.4 * torch.rand(n_segments, generator=gen))[seg_id]
    is_fricative = (torch.rand(n_segments, generator=gen) < 0.6)[seg_id] & ~voiced
    formants = torch.where(
        voiced[:, None], torch.tensor(_VOWELS)[vowel], torch.tensor(_FRICATIVES)[fric]
    )  # (F, 3)

    # Harmonic part: voiced gate smoothed over 3 frames, tilt 1/k times vowel formants.
    gate = voiced.float()[None, None]  # (F,) -> (1, 1, F)
    gate = torch.nn.functional.avg_pool1d(gate, 3, stride=1, padding=1, count_include_pad=False)
    amplitude = gate[0, 0] * loudness  # (1, 1, F) -> (F,)
    n_harmonics = min(80, int(sample_rate / 2 / F0_RANGE_HZ[0]))
    k = torch.arange(1, n_harmonics + 1, dtype=torch.float32)
    harm_freqs = f0[:, None] * k  # (F, 1) * (K,) -> (F, K)
    dist = (0.05 + _formant_envelope(harm_freqs, formants)) / k
    harmonic = harmonic_synth(
        f0[None],  # (F,) -> (1, F)
        amplitude[None],  # (F,) -> (1, F)
        dist[None],  # (F, K) -> (1, F, K)
        n_samples,
        HarmonicConfig(sample_rate=sample_rate),
    )[0]  # (1, T) -> (T,)

    # Noise part: breath noise under vowels, fricative bursts or near-silence between them.
    bands = torch.linspace(0.0, sample_rate / 2, _N_NOISE_BANDS).expand(n_frames, -1)  # (F, N)
    noise_gain = torch.where(voiced, 0.02, torch.where(is_fricative, 0.25, 0.003))
    mags = noise_gain[:, None] * (0.02 + _formant_envelope(bands, formants))  # (F, N)
    noise = filtered_noise(mags[None], n_samples, NoiseConfig(), gen)[
        0
    ]  # (1, F, N) -> (1, T) -> (T,)

    audio = harmonic + noise
    audio = audio * (_TARGET_RMS / audio.square().mean().sqrt().clamp_min(1e-8))
    voiced_t = upsample(gate[0], n_samples, "hann")[0] > 0.5  # (1, F) -> (1, T) -> (T,)
    f0_t = upsample(f0[None], n_samples, "linear")[0] * voiced_t  # (1, T) -> (T,)
    return SpeechLike(audio=audio, f0_hz=f0_t, voiced=voiced_t)


def speech_like_with_f0(
    duration_s: float, sample_rate: int = 16000, seed: int | Sequence[int] = 0
) -> SpeechLike:
    """Speech-like signal with its f0 and voicing (harmonic-plus-noise model, Engel et al. 2020).

    One int seed gives (T,) tensors; a sequence of B seeds gives (B, T), row b equal to the
    single-seed result for ``seed[b]``. T = round(duration_s * sample_rate); CPU tensors.
    """
    n_samples = round(duration_s * sample_rate)
    if n_samples < 1:
        raise ValueError(f"duration_s too short: {duration_s}")
    if isinstance(seed, int):
        return _one_example(n_samples, sample_rate, seed)
    parts = [_one_example(n_samples, sample_rate, int(s)) for s in seed]
    return SpeechLike(
        audio=torch.stack([p.audio for p in parts]),  # B x (T,) -> (B, T)
        f0_hz=torch.stack([p.f0_hz for p in parts]),  # B x (T,) -> (B, T)
        voiced=torch.stack([p.voiced for p in parts]),  # B x (T,) -> (B, T)
    )


def speech_like(
    duration_s: float, sample_rate: int = 16000, seed: int | Sequence[int] = 0
) -> torch.Tensor:
    """Deterministic speech-like audio (Engel et al. 2020 harmonic-plus-noise model).

    (T,) for an int seed, (B, T) for a sequence of B seeds; RMS 0.1. See
    :func:`speech_like_with_f0` for the f0 contour and voicing mask.
    """
    return speech_like_with_f0(duration_s, sample_rate, seed).audio
