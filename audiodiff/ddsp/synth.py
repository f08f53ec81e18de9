"""DDSP synthesisers: additive harmonic oscillator bank and time-varying filtered noise.

Follows Engel et al. 2020, "DDSP: Differentiable Digital Signal Processing" (ICLR). Controls are
given at frame rate with a leading batch dimension and rendered at audio rate. Everything is a
plain differentiable function of its inputs; nothing here holds parameters.

Frame-time conventions:
- ``upsample`` (used by the harmonic synth) spreads F frames evenly over the signal, frame 0 at
  sample 0 and frame F-1 at the last sample.
- ``time_varying_fir`` (used by the filtered noise) applies frame i to the block of samples
  ``[i * hop, (i + 1) * hop)`` with ``hop = ceil(T / F)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

ScaleFn = Callable[[torch.Tensor], torch.Tensor]
UpsampleMethod = Literal["linear", "hann"]

_TINY = 1e-12


def exp_sigmoid(
    x: torch.Tensor, exponent: float = 10.0, max_value: float = 2.0, threshold: float = 1e-7
) -> torch.Tensor:
    """Positive squashing for synth controls (Engel et al. 2020, Sec. B.5), any shape.

    ``max_value * sigmoid(x) ** ln(exponent) + threshold``: defaults give 2 * sigmoid(x)^ln 10
    + 1e-7, which maps raw network outputs to (1e-7, 2) with a log-like slope.
    """
    return max_value * torch.sigmoid(x) ** math.log(exponent) + threshold


def _frame_positions(
    n_frames: int, n_samples: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left frame index (T,) and fractional position (T,) of each sample between two frames."""
    if n_frames == 1:
        zeros = torch.zeros(n_samples, device=device, dtype=dtype)
        return torch.zeros(n_samples, device=device, dtype=torch.long), zeros
    # Sample n sits at frame position n * (F - 1) / (T - 1); integer arithmetic keeps it exact.
    denom = max(n_samples - 1, 1)
    scaled = torch.arange(n_samples, device=device) * (n_frames - 1)
    left = torch.div(scaled, denom, rounding_mode="floor").clamp(max=n_frames - 2)
    frac = (scaled - left * denom).to(dtype) / denom
    return left, frac


def upsample(
    frames: torch.Tensor, n_samples: int, method: UpsampleMethod = "linear"
) -> torch.Tensor:
    """Frame-rate controls to audio rate (Engel et al. 2020, Sec. 3).

    ``frames`` is (B, F) or (B, F, C); returns (B, T) or (B, T, C) with T = ``n_samples``.
    Frame 0 lands on sample 0 and frame F-1 on sample T-1. ``"linear"`` interpolates linearly
    (used for f0); ``"hann"`` cross-fades neighbouring frames with a raised cosine, which equals
    overlap-adding 50 %-overlapping Hann windows centred on the frames (used for amplitudes).
    """
    if frames.ndim not in (2, 3):
        raise ValueError(f"expected (B, F) or (B, F, C) frames, got shape {tuple(frames.shape)}")
    squeeze = frames.ndim == 2
    x = frames.unsqueeze(-1) if squeeze else frames  # (B, F) -> (B, F, 1)
    left, frac = _frame_positions(x.shape[1], n_samples, x.device, x.dtype)
    if x.shape[1] == 1:
        out = x.expand(-1, n_samples, -1)  # (B, 1, C) -> (B, T, C)
    else:
        if method == "hann":
            frac = 0.5 - 0.5 * torch.cos(math.pi * frac)
        elif method != "linear":
            raise ValueError(f"unknown upsampling method {method!r}")
        w = frac[None, :, None]  # (T,) -> (1, T, 1)
        out = x[:, left] * (1.0 - w) + x[:, left + 1] * w
    return out.squeeze(-1) if squeeze else out


def fft_convolve(signal: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """Full linear convolution by FFT along the last dim (Engel et al. 2020, Sec. 3).

    ``signal`` (..., T) and ``ir`` (..., L) broadcast over leading dims; returns (..., T + L - 1).
    """
    n_out = signal.shape[-1] + ir.shape[-1] - 1
    n_fft = 1 << max(n_out - 1, 1).bit_length()
    spec = torch.fft.rfft(signal, n=n_fft) * torch.fft.rfft(ir, n=n_fft)
    return torch.fft.irfft(spec, n=n_fft)[..., :n_out]


def frequency_impulse_response(
    magnitudes: torch.Tensor, window_size: int | None = None
) -> torch.Tensor:
    """Windowed linear-phase FIR from zero-phase magnitude responses (Engel et al. 2020, App. B).

    ``magnitudes`` (..., n_bands) sample 0..Nyquist linearly. The zero-phase response is inverted
    with an irfft of size 2 * (n_bands - 1), shifted so its centre tap sits at index
    ``window_size // 2``, cropped and Hann-windowed. Returns (..., window_size); the filter delays
    its input by ``window_size // 2`` samples. ``window_size`` defaults to 2 * (n_bands - 1).
    """
    n_bands = magnitudes.shape[-1]
    if n_bands < 2:
        raise ValueError("need at least two frequency bands (DC and Nyquist)")
    ir_size = 2 * (n_bands - 1)
    size = ir_size if window_size is None else window_size
    if not 1 <= size <= ir_size:
        raise ValueError(f"window_size must be in [1, {ir_size}], got {size}")
    zero_phase = torch.fft.irfft(magnitudes, n=ir_size)  # real input = zero phase, (..., ir_size)
    centred = torch.roll(zero_phase, shifts=ir_size // 2, dims=-1)  # centre tap at ir_size // 2
    start = ir_size // 2 - size // 2
    cropped = centred[..., start : start + size]
    window = torch.hann_window(
        size, periodic=size % 2 == 0, device=magnitudes.device, dtype=cropped.dtype
    )
    return cropped * window


def time_varying_fir(
    audio: torch.Tensor, irs: torch.Tensor, hop: int | None = None
) -> torch.Tensor:
    """Filter audio block by block with per-frame FIRs and overlap-add (Engel et al. 2020, App. B).

    ``audio`` (B, T); ``irs`` (B, F, L) causal filters. Frame i filters the block of samples
    ``[i * hop, (i + 1) * hop)``, ``hop`` defaulting to ``ceil(T / F)``; blocks past the last
    frame reuse its filter. Each block's full convolution tail is overlap-added onto the following
    blocks. Returns the causal output (B, T).
    """
    batch, n_samples = audio.shape
    hop = -(-n_samples // irs.shape[1]) if hop is None else hop
    n_blocks = -(-n_samples // hop)
    if n_blocks > irs.shape[1]:
        last = irs[:, -1:].expand(-1, n_blocks - irs.shape[1], -1)
        irs = torch.cat([irs, last], dim=1)  # (B, F, L) -> (B, n_blocks, L)
    irs = irs[:, :n_blocks]
    padded = torch.nn.functional.pad(audio, (0, hop * n_blocks - n_samples))
    blocks = padded.reshape(batch, n_blocks, hop)  # (B, n_blocks * hop) -> (B, n_blocks, hop)
    filtered = fft_convolve(blocks, irs)  # (B, n_blocks, hop + L - 1)
    seg = filtered.shape[-1]
    out_len = hop * (n_blocks - 1) + seg
    folded = torch.nn.functional.fold(
        filtered.transpose(1, 2),  # (B, n_blocks, seg) -> (B, seg, n_blocks) as fold expects
        output_size=(1, out_len),
        kernel_size=(1, seg),
        stride=(1, hop),
    )  # (B, 1, 1, out_len)
    return folded.reshape(batch, out_len)[:, :n_samples]  # (B, 1, 1, out_len) -> (B, out_len)


@dataclass(frozen=True)
class HarmonicConfig:
    """Settings of :func:`harmonic_synth`.

    ``scale_fn`` maps raw network outputs to positive amplitudes (e.g. :func:`exp_sigmoid`);
    ``None`` means the amplitude inputs are already non-negative. ``phase_dtype`` is the dtype
    the phase is accumulated in (float64 keeps high harmonics of long signals in tune).
    """

    sample_rate: int = 16000
    scale_fn: ScaleFn | None = None
    normalize_distribution: bool = True
    amplitude_upsampling: UpsampleMethod = "hann"
    phase_dtype: torch.dtype = torch.float64


def remove_above_nyquist(
    amplitudes: torch.Tensor, frequencies: torch.Tensor, sample_rate: int
) -> torch.Tensor:
    """Zero harmonics at or above Nyquist (Engel et al. 2020, Sec. 3.1); same-shape tensors."""
    return amplitudes * (frequencies < sample_rate / 2).to(amplitudes.dtype)


def harmonic_amplitudes(
    f0_hz: torch.Tensor,
    amplitude: torch.Tensor,
    harmonic_distribution: torch.Tensor,
    config: HarmonicConfig = HarmonicConfig(),
) -> torch.Tensor:
    """Per-harmonic frame-rate amplitudes A_k = A * c_k (Engel et al. 2020, Sec. 3.1).

    ``f0_hz`` (B, F) and ``amplitude`` (B, F); ``harmonic_distribution`` (B, F, K). Applies
    ``config.scale_fn``, drops harmonics k * f0 at or above Nyquist and (optionally) normalises the
    distribution to sum to one over the remaining harmonics. Returns (B, F, K).
    """
    if config.scale_fn is not None:
        amplitude = config.scale_fn(amplitude)
        harmonic_distribution = config.scale_fn(harmonic_distribution)
    n_harmonics = harmonic_distribution.shape[-1]
    k = torch.arange(1, n_harmonics + 1, device=f0_hz.device, dtype=f0_hz.dtype)
    freqs = f0_hz.unsqueeze(-1) * k  # (B, F) -> (B, F, 1) -> (B, F, K)
    dist = remove_above_nyquist(harmonic_distribution, freqs, config.sample_rate)
    if config.normalize_distribution:
        dist = dist / dist.sum(dim=-1, keepdim=True).clamp_min(_TINY)
    return amplitude.unsqueeze(-1) * dist  # (B, F) -> (B, F, 1) -> (B, F, K)


def harmonic_synth(
    f0_hz: torch.Tensor,
    amplitude: torch.Tensor,
    harmonic_distribution: torch.Tensor,
    n_samples: int,
    config: HarmonicConfig = HarmonicConfig(),
    initial_phase: torch.Tensor | None = None,
) -> torch.Tensor:
    """Additive harmonic oscillator bank (Engel et al. 2020, Sec. 3.1).

    ``f0_hz`` (B, F) in Hz, ``amplitude`` (B, F), ``harmonic_distribution`` (B, F, K), all at
    frame rate. f0 is upsampled linearly, amplitudes with ``config.amplitude_upsampling``; the
    output is sum_k A_k(n) sin(phi_k(n)) with phi_k = k * cumsum(2 pi f0 / sr) + initial_phase,
    where ``initial_phase`` (B, K) or (B, 1) is in radians. Harmonics that cross Nyquist between
    frames are zeroed at audio rate too. Returns (B, T) with T = ``n_samples``.
    """
    amps = harmonic_amplitudes(f0_hz, amplitude, harmonic_distribution, config)
    amps = upsample(amps, n_samples, config.amplitude_upsampling)  # (B, T, K)
    f0 = upsample(f0_hz, n_samples, "linear")  # (B, T)
    n_harmonics = amps.shape[-1]
    k = torch.arange(1, n_harmonics + 1, device=f0.device, dtype=config.phase_dtype)
    freqs = f0.unsqueeze(-1) * k.to(f0.dtype)  # (B, T) -> (B, T, 1) -> (B, T, K)
    amps = remove_above_nyquist(amps, freqs, config.sample_rate)
    omega = f0.to(config.phase_dtype) * (2.0 * math.pi / config.sample_rate)  # (B, T) rad/sample
    base_phase = torch.remainder(torch.cumsum(omega, dim=-1), 2.0 * math.pi)
    phases = base_phase.unsqueeze(-1) * k  # (B, T) -> (B, T, 1) -> (B, T, K)
    if initial_phase is not None:
        phases = phases + initial_phase.to(config.phase_dtype).unsqueeze(1)  # (B, K) -> (B, 1, K)
    waves = torch.sin(torch.remainder(phases, 2.0 * math.pi)).to(amps.dtype)
    return (amps * waves).sum(dim=-1)


@dataclass(frozen=True)
class NoiseConfig:
    """Settings of :func:`filtered_noise`.

    ``window_size`` is the FIR length (default 2 * (n_bands - 1)); ``scale_fn`` maps raw network
    outputs to positive magnitudes, ``None`` means the magnitudes are already non-negative.
    """

    window_size: int | None = None
    scale_fn: ScaleFn | None = None


def filtered_noise(
    magnitudes: torch.Tensor,
    n_samples: int,
    config: NoiseConfig = NoiseConfig(),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Uniform noise in [-1, 1] through a time-varying linear-phase FIR (Engel et al. 2020, 3.2).

    ``magnitudes`` (B, F, n_bands): per-frame magnitude response at n_bands frequencies spaced
    linearly from 0 Hz to Nyquist. Frame i shapes samples ``[i * hop, (i + 1) * hop)``,
    ``hop = ceil(T / F)``; the linear-phase delay is removed so output and controls line up.
    ``generator`` must live on the magnitudes' device. Returns (B, T) with T = ``n_samples``.
    """
    if config.scale_fn is not None:
        magnitudes = config.scale_fn(magnitudes)
    irs = frequency_impulse_response(magnitudes, config.window_size)  # (B, F, L)
    delay = irs.shape[-1] // 2
    batch = magnitudes.shape[0]
    noise = torch.rand(
        (batch, n_samples + delay),
        generator=generator,
        device=magnitudes.device,
        dtype=irs.dtype,
    )
    noise = 2.0 * noise - 1.0
    # Input sample m is shaped by the frame its block belongs to; reading `delay` samples ahead
    # and dropping the first `delay` outputs removes the linear-phase delay.
    hop = -(-n_samples // magnitudes.shape[1])
    out = time_varying_fir(noise, irs, hop)  # (B, T + delay)
    return out[:, delay:]
