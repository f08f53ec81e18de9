"""Multi-scale spectral loss (Engel et al. 2020, "DDSP", Sec. 4.2.1).

For each FFT size, an STFT with a Hann window and 75 % overlap (hop = n_fft / 4) is taken of both
signals; the loss adds the mean absolute difference of the magnitudes and of the log magnitudes,
then sums over scales. Returned per example so that the caller chooses the batch reduction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_FFT_SIZES: tuple[int, ...] = (2048, 1024, 512, 256, 128, 64)


def _magnitudes(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    """|STFT| of (B, T) audio: Hann window, hop n_fft / 4, centred frames -> (B, n_fft/2+1, N)."""
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(
        audio,
        n_fft=n_fft,
        hop_length=n_fft // 4,
        window=window,
        center=True,
        pad_mode="constant",
        return_complex=True,
    )
    return spec.abs()


def multiscale_spectral_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES,
    mag_weight: float = 1.0,
    logmag_weight: float = 1.0,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Multi-scale spectral loss of Engel et al. 2020, Sec. 4.2.1, per example.

    ``pred`` and ``target`` are (B, T) (or (T,), treated as B = 1). For each n_fft in
    ``fft_sizes``: ``mag_weight * mean|S - S'| + logmag_weight * mean|log(S + eps) -
    log(S' + eps)|`` over frequency and time, summed over scales. Returns (B,).
    """
    if pred.shape != target.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if pred.ndim == 1:
        pred, target = pred.unsqueeze(0), target.unsqueeze(0)  # (T,) -> (1, T)
    total = pred.new_zeros(pred.shape[0])
    for n_fft in fft_sizes:
        mag_p = _magnitudes(pred, n_fft)
        mag_t = _magnitudes(target, n_fft)
        if mag_weight:
            total = total + mag_weight * (mag_p - mag_t).abs().mean(dim=(-2, -1))
        if logmag_weight:
            log_diff = torch.log(mag_p + eps) - torch.log(mag_t + eps)
            total = total + logmag_weight * log_diff.abs().mean(dim=(-2, -1))
    return total


@dataclass(frozen=True)
class MultiScaleSpectralLoss:
    """Configured multi-scale spectral loss (Engel et al. 2020, Sec. 4.2.1); no parameters.

    Calling it on (B, T) prediction and target returns the per-example loss (B,).
    """

    fft_sizes: tuple[int, ...] = DEFAULT_FFT_SIZES
    mag_weight: float = 1.0
    logmag_weight: float = 1.0
    eps: float = 1e-5

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-example loss (B,) of (B, T) ``pred`` against (B, T) ``target``."""
        return multiscale_spectral_loss(
            pred, target, self.fft_sizes, self.mag_weight, self.logmag_weight, self.eps
        )
