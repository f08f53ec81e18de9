"""Tests of the DDSP reverbs: identity cases, Schroeder-measured RT60 and realised DRR."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audiodiff.ddsp import LearnableReverb, apply_ir, exponential_decay_ir, exponential_reverb

SR = 16000


def _rt60_schroeder(ir: np.ndarray, sample_rate: int, lo_db: float = -5.0, hi_db: float = -35.0):
    """RT60 from a T30 line fit to the Schroeder backward-integrated energy decay curve."""
    edc = np.cumsum(ir[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    sel = (edc_db <= lo_db) & (edc_db >= hi_db)
    t = np.arange(len(ir))[sel] / sample_rate
    slope, _ = np.polyfit(t, edc_db[sel], 1)  # dB per second
    return -60.0 / slope


def test_learnable_reverb_with_zero_wet_taps_is_identity():
    reverb = LearnableReverb(ir_length=512)
    with torch.no_grad():
        reverb.ir.zero_()
    audio = torch.randn(3, 2000)
    torch.testing.assert_close(reverb(audio), audio, rtol=0, atol=0)


def test_learnable_reverb_first_tap_is_held_at_zero_and_learns():
    reverb = LearnableReverb(ir_length=64, init_std=0.1)
    with torch.no_grad():
        reverb.ir[0] = 5.0  # must be ignored: tap 0 is the dry path
    audio = torch.randn(2, 500)
    out = reverb(audio)
    ir = reverb.impulse_response().detach()
    expected = audio.numpy() + np.stack(
        [np.convolve(a, ir.numpy())[:500] for a in audio.numpy()]
    )  # independent time-domain convolution
    np.testing.assert_allclose(out.detach().numpy(), expected, atol=1e-5)
    out.square().sum().backward()
    assert reverb.ir.grad[0] == 0 and reverb.ir.grad[1:].abs().sum() > 0


def test_unit_impulse_ir_returns_the_input():
    audio = torch.randn(2, 3000)
    delta = torch.zeros(100)
    delta[0] = 1.0
    torch.testing.assert_close(apply_ir(audio, delta), audio, atol=1e-6, rtol=0)
    batched = torch.zeros(2, 10)
    batched[:, 0] = 1.0
    torch.testing.assert_close(apply_ir(audio, batched), audio, atol=1e-6, rtol=0)


@pytest.mark.parametrize("rt60", [0.3, 0.6, 1.0])
def test_exponential_ir_rt60_measured_by_schroeder_integration(rt60):
    n_taps = int(1.5 * rt60 * SR)
    ir = exponential_decay_ir(rt60, 0.0, n_taps, SR, seed=3)
    assert ir.shape == (1, n_taps)
    measured = _rt60_schroeder(ir[0].double().numpy(), SR)
    assert measured == pytest.approx(rt60, rel=0.10)


@pytest.mark.parametrize("drr_db", [-6.0, 0.0, 12.0])
def test_exponential_ir_realises_requested_drr(drr_db):
    ir = exponential_decay_ir(torch.tensor([0.4, 0.8]), drr_db, 12000, SR, seed=7)
    ir = ir.double().numpy()
    direct = ir[:, 0] ** 2
    tail = (ir[:, 1:] ** 2).sum(axis=1)
    np.testing.assert_allclose(10 * np.log10(direct / tail), drr_db, atol=0.5)


def test_exponential_ir_is_seeded_and_differentiable():
    a = exponential_decay_ir(0.5, 3.0, 4000, SR, seed=1)
    b = exponential_decay_ir(0.5, 3.0, 4000, SR, seed=1)
    c = exponential_decay_ir(0.5, 3.0, 4000, SR, seed=2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)
    rt60 = torch.tensor([0.5, 0.9], requires_grad=True)
    drr = torch.tensor([0.0, 5.0], requires_grad=True)
    audio = torch.randn(2, 3000)
    out = exponential_reverb(audio, rt60, drr, 4000, SR)
    assert out.shape == (2, 3000)
    out.square().sum().backward()
    assert torch.isfinite(rt60.grad).all() and (rt60.grad != 0).all()
    assert torch.isfinite(drr.grad).all() and (drr.grad != 0).all()
