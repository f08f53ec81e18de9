"""Training objectives against sgmse 0.1.2's ``ScoreModel._loss``, written out here for fixed
(x0, y, t, z) (``sgmse.model`` imports torchaudio, which does not import here). The marginals come
from sgmse's own SDE classes, so only the network is shared between both sides."""

import pytest
import torch
from sgmse.sdes import OUVESDE as RefOUVE
from sgmse.sdes import SBVESDE as RefSBVE

from audiodiff.losses import DataPredictionLoss, denoiser_loss, score_matching_loss
from audiodiff.models import Parametrisation, ScoreModel
from audiodiff.nets import NCSNpp, NCSNppConfig
from audiodiff.sdes import OUVESDE, SBVESDE
from audiodiff.spec import SpecConfig, Spectrogram

SPEC = SpecConfig(n_fft=30, hop_length=8, alpha=0.5, beta=0.15)  # 16 bins
NET = NCSNppConfig(nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_freqs=16)


def _model(sde, **param) -> ScoreModel:
    torch.manual_seed(0)
    backbone = NCSNpp(NCSNppConfig.from_dict({**NET.to_dict(), "out_scale_at": "output"}))
    with torch.no_grad():  # the zero-initialised last layers would hide the network
        for p in backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return ScoreModel(backbone, sde, Parametrisation(**param)).eval()


def _example():
    gen = torch.Generator().manual_seed(3)
    shape = (3, 1, 16, 16)
    x0 = torch.randn(shape, dtype=torch.complex64, generator=gen)
    y = x0 + 0.5 * torch.randn(shape, dtype=torch.complex64, generator=gen)
    z = torch.randn(shape, dtype=torch.complex64, generator=gen)
    return x0, y, torch.tensor([0.9, 0.4, 0.05]), z


def _ref_point(ref_sde, x0, y, t, z):
    mean, std = ref_sde.marginal_prob(x0, y, t)
    sigma = std[:, None, None, None]
    return mean + sigma * z, mean, sigma


def test_score_matching_loss_equals_reference_formula():
    model = _model(OUVESDE(), loss_type="score_matching", network_scaling=None, c_out="1")
    x0, y, t, z = _example()
    x_t, _, sigma = _ref_point(RefOUVE(1.5, 0.05, 0.5), x0, y, t, z)
    with torch.no_grad():
        score = model(x_t, y, t)
        losses = torch.square(torch.abs(score * sigma + z))
        expected = 0.5 * torch.sum(losses.reshape(losses.shape[0], -1), dim=-1)
        ours = score_matching_loss(model, x0, y, y, t=t, z=z)
    assert ours.shape == (3,) and expected.min() > 0
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=0)


@pytest.mark.parametrize("weighting", ["1", "sigma^2", "edm"])
def test_denoiser_loss_equals_reference_formula(weighting):
    sigma_data = 0.2
    model = _model(OUVESDE(), loss_type="denoiser", c_in="edm", c_out="1", sigma_data=sigma_data)
    x0, y, t, z = _example()
    x_t, mean, sigma = _ref_point(RefOUVE(1.5, 0.05, 0.5), x0, y, t, z)
    with torch.no_grad():
        score = model(x_t, y, t)
        losses = torch.square(torch.abs(score * sigma.pow(2) + x_t - mean))
        weight = {
            "1": 1.0,
            "sigma^2": sigma**2,
            "edm": (sigma**2 + sigma_data**2) / ((sigma * sigma_data) ** 2),
        }[weighting]
        losses = weight * losses
        expected = 0.5 * torch.sum(losses.reshape(losses.shape[0], -1), dim=-1)
        ours = denoiser_loss(model, x0, y, y, weighting=weighting, sigma_data=sigma_data, t=t, z=z)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=0)


def _ref_to_audio(spec, length):
    """sgmse's to_audio: spec_back (exponent transform) then torch.istft."""
    spec = spec / SPEC.beta
    spec = spec.abs() ** (1 / SPEC.alpha) * torch.exp(1j * spec.angle())
    window = torch.hann_window(SPEC.n_fft, periodic=True)
    return torch.istft(
        spec, n_fft=SPEC.n_fft, hop_length=SPEC.hop_length, window=window, center=True,
        length=length,
    )  # fmt: skip


def test_data_prediction_loss_equals_reference_formula():
    l1_weight = 0.5  # large, so that the time-domain term counts in the comparison
    model = _model(SBVESDE(k=2.6, c=0.4), loss_type="data_prediction", c_out="1")
    x0, y, t, z = _example()
    x_t, _, _ = _ref_point(RefSBVE(k=2.6, c=0.4), x0, y, t, z)
    with torch.no_grad():
        x_hat = model(x_t, y, t)
        _, _, freqs, frames = x0.shape
        tf = (1 / (freqs * frames)) * torch.square(torch.abs(x_hat - x0))
        tf = 0.5 * torch.sum(tf.reshape(tf.shape[0], -1), dim=-1)
        length = (frames - 1) * SPEC.hop_length
        l1 = (1 / length) * torch.abs(
            _ref_to_audio(x_hat.squeeze(1), length) - _ref_to_audio(x0.squeeze(1), length)
        )
        l1 = 0.5 * torch.sum(l1.reshape(l1.shape[0], -1), dim=-1)
        expected = tf + l1_weight * l1
        ours = DataPredictionLoss(Spectrogram(SPEC), l1_weight)(model, x0, y, y, t=t, z=z)
    assert (l1_weight * l1).min() > 0.01 * tf.max()
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=0)


def test_extra_loss_terms_plug_in():
    model = _model(SBVESDE(), loss_type="data_prediction", c_out="1")
    x0, y, t, z = _example()

    def l1_spec(x_hat, x):
        return (x_hat - x).abs().sum((1, 2, 3))

    base = DataPredictionLoss(Spectrogram(SPEC), 0.0)
    extra = DataPredictionLoss(Spectrogram(SPEC), 0.0, [(2.0, l1_spec)])
    with torch.no_grad():
        gap = extra(model, x0, y, y, t=t, z=z) - base(model, x0, y, y, t=t, z=z)
        x_t, _, sigma = _ref_point(RefSBVE(k=2.6, c=0.4), x0, y, t, z)
        expected = 2.0 * l1_spec(model(x_t, y, t), x0)
    torch.testing.assert_close(gap, expected, rtol=1e-4, atol=1e-4)


def test_drawn_time_and_noise_follow_the_generator():
    model = _model(OUVESDE(), c_out="1", network_scaling=None)
    x0, y, _, _ = _example()
    with torch.no_grad():
        a = score_matching_loss(model, x0, y, y, generator=torch.Generator().manual_seed(5))
        b = score_matching_loss(model, x0, y, y, generator=torch.Generator().manual_seed(5))
        c = score_matching_loss(model, x0, y, y, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
