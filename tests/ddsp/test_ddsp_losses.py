"""Tests of the multi-scale spectral loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiodiff.ddsp import DEFAULT_FFT_SIZES, MultiScaleSpectralLoss, multiscale_spectral_loss


def test_default_scales_match_the_paper():
    assert DEFAULT_FFT_SIZES == (2048, 1024, 512, 256, 128, 64)
    assert MultiScaleSpectralLoss().fft_sizes == DEFAULT_FFT_SIZES


def test_identical_inputs_give_exactly_zero():
    x = torch.randn(3, 4000)
    loss = MultiScaleSpectralLoss()(x, x.clone())
    assert loss.shape == (3,)
    assert torch.all(loss == 0)


def test_different_inputs_positive_with_finite_gradients():
    torch.manual_seed(0)
    target = torch.randn(2, 3000)
    pred = (target + 0.3 * torch.randn(2, 3000)).requires_grad_(True)
    loss = multiscale_spectral_loss(pred, target)
    assert loss.shape == (2,)
    assert torch.all(loss > 0)
    loss.sum().backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_per_example_losses_are_independent_of_the_batch():
    torch.manual_seed(1)
    target = torch.randn(3, 2500)
    pred = target.clone()
    pred[1] += 0.5 * torch.randn(2500)
    loss = multiscale_spectral_loss(pred, target)
    assert loss[0] == 0 and loss[2] == 0 and loss[1] > 0
    alone = multiscale_spectral_loss(pred[1:2], target[1:2])
    torch.testing.assert_close(loss[1:2], alone)


def test_matches_an_independent_numpy_computation():
    torch.manual_seed(2)
    pred, target = (
        torch.randn(1, 1024, dtype=torch.float64),
        torch.randn(1, 1024, dtype=torch.float64),
    )
    n_fft, eps = 256, 1e-5
    got = multiscale_spectral_loss(pred, target, fft_sizes=(n_fft,), mag_weight=2.0, eps=eps)

    def mags(x: np.ndarray) -> np.ndarray:
        padded = np.pad(x, n_fft // 2)  # centred frames, zero padding
        hop = n_fft // 4
        window = 0.5 - 0.5 * np.cos(2 * math.pi * np.arange(n_fft) / n_fft)  # periodic Hann
        starts = range(0, len(padded) - n_fft + 1, hop)
        return np.abs(np.stack([np.fft.rfft(padded[s : s + n_fft] * window) for s in starts]))

    mp, mt = mags(pred[0].numpy()), mags(target[0].numpy())
    expected = 2.0 * np.abs(mp - mt).mean() + np.abs(np.log(mp + eps) - np.log(mt + eps)).mean()
    assert got.item() == pytest.approx(expected, rel=1e-9)
