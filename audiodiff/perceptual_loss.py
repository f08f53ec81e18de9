"""A differentiable loudness-disturbance loss shaped after PESQ (ITU-T P.862, P.862.2).

Not PESQ: no time alignment, no IIR input filter, no frequency or gain equalisation, and formula
curves instead of the standard's tables. What it keeps is the part that decides the score:

1. each waveform is scaled to unit mean power, heard at 79 dB SPL (PESQ's listening level);
2. 32 ms Hann frames, 50 % overlap; power summed in critical bands of half a Bark
   (Zwicker's Bark formula);
3. Zwicker loudness per band, N = (P0 / 0.5)^0.23 · ((0.5 + 0.5 P / P0)^0.23 − 1) ≥ 0, with P0
   the threshold in quiet at the band centre (Terhardt's formula);
4. the disturbance D = N_deg − N_ref less a dead zone of 0.25 · min(N_deg, N_ref) (masking);
5. the asymmetric disturbance D · A with A = ((P_deg + P0) / (P_ref + P0))^1.2, counted where
   A ≥ 3 and capped at 12: added noise is heard more than missing speech;
6. per frame an L3 mean over bands (symmetric) and an L1 mean (asymmetric), band-width weighted;
   over time an L6 mean within 20-frame intervals (half overlapping), then an L2 mean of those;
7. the loss is PESQ's MOS drop, 0.1 · d_sym + 0.0309 · d_asym (0 for identical signals).

``tests/test_perceptual_loss.py`` checks that it ranks degradations of real speech as PESQ-WB does.
"""

from __future__ import annotations

import math

import torch

LISTENING_LEVEL_DB = 79.0  # the SPL PESQ assumes for its level-aligned input
ZWICKER_POWER = 0.23
DEAD_ZONE = 0.25
ASYMMETRY_POWER, ASYMMETRY_FLOOR, ASYMMETRY_CAP = 1.2, 3.0, 12.0
SYMMETRIC_WEIGHT, ASYMMETRIC_WEIGHT = 0.1, 0.0309
INTERVAL_FRAMES = 20


def bark(freq_hz: torch.Tensor) -> torch.Tensor:
    """Zwicker and Terhardt's critical-band rate z(f) in Bark."""
    return 13.0 * torch.atan(0.00076 * freq_hz) + 3.5 * torch.atan((freq_hz / 7500.0) ** 2)


def threshold_in_quiet_db(freq_hz: torch.Tensor) -> torch.Tensor:
    """Terhardt's threshold in quiet, dB SPL, for frequencies >= 20 Hz."""
    khz = freq_hz.clamp_min(20.0) / 1000.0
    return 3.64 * khz**-0.8 - 6.5 * torch.exp(-0.6 * (khz - 3.3) ** 2) + 1e-3 * khz**4


class LoudnessDisturbanceLoss(torch.nn.Module):
    """Waveforms (B, L) -> the PESQ-shaped loss (B,) of ``degraded`` against ``reference``."""

    def __init__(self, sample_rate: int = 16000, bands_per_bark: float = 2.0):
        super().__init__()
        self.n_fft = 1 << round(math.log2(0.032 * sample_rate))
        freqs = torch.fft.rfftfreq(self.n_fft, 1.0 / sample_rate)
        z = bark(freqs)
        index = torch.floor(z * bands_per_bark).long()
        keep = freqs >= 100.0  # below 100 Hz PESQ-WB ignores the signal too
        bands = torch.unique(index[keep])
        # (bins, bands) 0/1 map of each bin above 100 Hz to its band
        fold = (index[:, None] == bands[None, :]) & keep[:, None]
        centres = (fold * freqs[:, None]).sum(0) / fold.sum(0)
        threshold_db = threshold_in_quiet_db(centres) - LISTENING_LEVEL_DB
        widths = torch.stack([z[fold[:, b]].max() - z[fold[:, b]].min() for b in range(len(bands))])
        self.register_buffer("fold", fold.float(), persistent=False)
        self.register_buffer("threshold", 10.0 ** (threshold_db / 10.0), persistent=False)
        self.register_buffer("widths", widths + 1.0 / bands_per_bark, persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)

    def band_power(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, frames, bands), scaled so that the whole signal has unit mean power."""
        audio = audio / audio.square().mean(-1, keepdim=True).add(1e-10).sqrt()
        spec = torch.stft(
            audio,
            self.n_fft,
            hop_length=self.n_fft // 2,
            window=self.window.to(audio.dtype),
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        # Parseval: the bins' powers of a frame sum to its mean-square value
        power = spec.abs().square().transpose(1, 2) / (self.window.square().sum() * self.n_fft / 2)
        return power @ self.fold

    def loudness(self, power: torch.Tensor) -> torch.Tensor:
        p0 = self.threshold
        grown = (0.5 + 0.5 * power / p0) ** ZWICKER_POWER - 1.0
        return ((p0 / 0.5) ** ZWICKER_POWER * grown).clamp_min(0.0)

    def forward(self, degraded: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        if degraded.shape != reference.shape:
            raise ValueError(f"shape mismatch: {tuple(degraded.shape)} vs {tuple(reference.shape)}")
        p_deg, p_ref = self.band_power(degraded), self.band_power(reference)
        n_deg, n_ref = self.loudness(p_deg), self.loudness(p_ref)
        difference = n_deg - n_ref
        masked = (difference.abs() - DEAD_ZONE * torch.minimum(n_deg, n_ref)).clamp_min(0.0)
        ratio = ((p_deg + self.threshold) / (p_ref + self.threshold)) ** ASYMMETRY_POWER
        asymmetry = torch.where(ratio < ASYMMETRY_FLOOR, torch.zeros_like(ratio), ratio)
        asymmetry = asymmetry.clamp_max(ASYMMETRY_CAP)
        weights = self.widths / self.widths.sum()
        eps = 1e-30  # keeps the gradient of the p-norms finite at zero disturbance
        symmetric = ((masked.pow(3) * weights).sum(-1) + eps) ** (1 / 3)  # (B, frames)
        asymmetric = (masked * asymmetry * weights).sum(-1)
        return SYMMETRIC_WEIGHT * self._over_time(symmetric) + ASYMMETRIC_WEIGHT * self._over_time(
            asymmetric
        )

    @staticmethod
    def _over_time(frames: torch.Tensor) -> torch.Tensor:
        """(B, frames) -> (B,): L6 mean within half-overlapping 20-frame intervals, L2 over them."""
        size, step = INTERVAL_FRAMES, INTERVAL_FRAMES // 2
        pad = max(size - frames.shape[-1], (-(frames.shape[-1] - size)) % step)
        if pad:
            frames = torch.nn.functional.pad(frames[:, None], (0, pad), mode="replicate")[:, 0]
        intervals = frames.unfold(-1, size, step)  # (B, n, size)
        eps = 1e-30
        within = (intervals.pow(6).mean(-1) + eps) ** (1 / 6)
        return (within.square().mean(-1) + eps).sqrt()
