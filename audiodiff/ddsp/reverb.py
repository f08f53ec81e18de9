"""Reverberation for DDSP: a learnable long FIR and a parametric exponential-decay impulse response.

Engel et al. 2020, "DDSP: Differentiable Digital Signal Processing", Sec. 3.3: reverb is a long
convolution applied in the frequency domain, either with a freely learned impulse response or
with decaying filtered noise. Here the parametric form is exponentially decaying Gaussian noise
set by its reverberation time RT60 and its direct-to-reverberant ratio (DRR).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from audiodiff.ddsp.synth import fft_convolve

# ln(1000): an amplitude envelope exp(-decay * t) is 60 dB down at t = RT60 when
# decay = ln(1000) / RT60 (about 6.91 / RT60).
_LN_1000 = math.log(1000.0)


def apply_ir(audio: torch.Tensor, ir: torch.Tensor) -> torch.Tensor:
    """Convolve audio with an impulse response by FFT, keeping the input length (Engel 2020, 3.3).

    ``audio`` (B, T); ``ir`` (B, L) or (L,), tap 0 aligned with the input. Returns (B, T).
    """
    if ir.ndim == 1:
        ir = ir.unsqueeze(0)  # (L,) -> (1, L), broadcast over the batch
    return fft_convolve(audio, ir)[..., : audio.shape[-1]]


class LearnableReverb(nn.Module):
    """Learned long FIR reverb with a dry path (Engel et al. 2020, Sec. 3.3).

    The impulse response is a free parameter of ``ir_length`` taps whose first tap is held at
    zero, so the input passes through the dry path unchanged and the FIR adds only the wet part:
    ``y = x + x * h``. Input (B, T), output (B, T).
    """

    def __init__(self, ir_length: int, init_std: float = 1e-6, add_dry: bool = True) -> None:
        super().__init__()
        if ir_length < 2:
            raise ValueError("ir_length must be at least 2 (tap 0 is reserved for the dry path)")
        self.add_dry = add_dry
        self.ir = nn.Parameter(torch.randn(ir_length) * init_std)

    def impulse_response(self) -> torch.Tensor:
        """The wet impulse response (L,) of Engel et al. 2020, Sec. 3.3, first tap zeroed."""
        return torch.cat([torch.zeros_like(self.ir[:1]), self.ir[1:]])

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Reverberate (B, T) audio, dry plus wet (Engel et al. 2020, Sec. 3.3); returns (B, T)."""
        wet = apply_ir(audio, self.impulse_response())
        return audio + wet if self.add_dry else wet


def _as_batch(value: torch.Tensor | float, like: torch.Tensor | None) -> torch.Tensor:
    """Scalar or (B,) parameter -> (B,) float tensor on ``like``'s device when given."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1)  # scalar or (B,) -> (B,)
    device = like.device if like is not None else None
    return torch.tensor([float(value)], device=device)


def exponential_decay_ir(
    rt60_s: torch.Tensor | float,
    drr_db: torch.Tensor | float,
    n_taps: int,
    sample_rate: int = 16000,
    seed: int = 0,
) -> torch.Tensor:
    """Exponentially decaying noise impulse response (Engel et al. 2020, Sec. 3.3).

    ``rt60_s`` and ``drr_db`` are floats or (B,) tensors (broadcast together). Tap 0 is the unit
    direct path; taps 1.. are ``gain * exp(-decay * t) * n(t)`` with Gaussian noise ``n``,
    ``decay = ln(1000) / RT60`` (amplitude 60 dB down at RT60) and ``gain`` set from the realised
    noise so that ``10 log10(direct^2 / sum(tail^2))`` equals ``drr_db`` exactly. The noise comes
    from a CPU generator seeded with ``seed`` (same for every batch item), so the IR is identical
    on every device. Differentiable w.r.t. RT60 and DRR. Returns (B, n_taps).
    """
    like = next((v for v in (rt60_s, drr_db) if isinstance(v, torch.Tensor)), None)
    rt60 = _as_batch(rt60_s, like)
    drr = _as_batch(drr_db, like)
    rt60, drr = torch.broadcast_tensors(rt60, drr)
    dtype = rt60.dtype if rt60.is_floating_point() else torch.get_default_dtype()
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_taps - 1, generator=gen, dtype=dtype).to(rt60.device)
    t = torch.arange(1, n_taps, device=rt60.device, dtype=dtype) / sample_rate
    decay = _LN_1000 / rt60.to(dtype)
    tail = torch.exp(-decay[:, None] * t[None, :]) * noise  # (B, 1) * (1, L - 1) -> (B, L - 1)
    tail_energy = tail.square().sum(dim=-1, keepdim=True)  # (B, 1)
    target_ratio = 10.0 ** (drr.to(dtype)[:, None] / 10.0)  # (B,) -> (B, 1)
    gain = torch.rsqrt(tail_energy * target_ratio)
    direct = torch.ones_like(gain)
    return torch.cat([direct, gain * tail], dim=-1)  # (B, 1) + (B, L - 1) -> (B, L)


def exponential_reverb(
    audio: torch.Tensor,
    rt60_s: torch.Tensor | float,
    drr_db: torch.Tensor | float,
    n_taps: int,
    sample_rate: int = 16000,
    seed: int = 0,
) -> torch.Tensor:
    """Reverberate (B, T) audio with :func:`exponential_decay_ir` (Engel et al. 2020, 3.3).

    The IR already holds the direct path at tap 0, so no separate dry signal is added.
    Returns (B, T).
    """
    ir = exponential_decay_ir(rt60_s, drr_db, n_taps, sample_rate, seed)
    return apply_ir(audio, ir.to(device=audio.device, dtype=audio.dtype))
