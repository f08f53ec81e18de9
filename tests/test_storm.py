"""StoRM: predictive stage + the same ScoreModel; modes, start distribution, losses, overfit."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from audiodiff import Enhancer
from audiodiff.audio import read_audio
from audiodiff.checkpoint import build_model, load_pretrained, save_pretrained
from audiodiff.config import ModelConfig, SamplerConfig
from audiodiff.enhance import enhance_spectrogram
from audiodiff.models import (
    PredictiveLoss,
    ScoreModel,
    StoRM,
    predictive_mse_loss,
    score_matching_loss,
    storm_loss,
)
from audiodiff.nets import PRESETS
from audiodiff.spec import Spectrogram

DATA = __import__("pathlib").Path(__file__).parent / "data" / "pairs"
TINY = PRESETS["ncsnpp_tiny"]


def storm_config(**sampler) -> ModelConfig:
    return ModelConfig(
        kind="storm",
        backbone=replace(TINY, in_channels=6),
        predictor=replace(TINY, in_channels=2, time_conditional=False),
        sampler=SamplerConfig(corrector_steps=0, **sampler),
    )


@pytest.fixture(scope="module")
def storm():
    torch.manual_seed(0)
    return build_model(storm_config()).eval()


def real_crop(frames: int, name: str = "p287_001.wav", start: int = 8000):
    clean, _ = read_audio(DATA / "clean" / name)
    noisy, _ = read_audio(DATA / "noisy" / name)
    length = (frames - 1) * 128
    c, n = clean[:, start : start + length], noisy[:, start : start + length]
    scale = np.abs(n).max()
    spec = Spectrogram()
    return spec.analyse(torch.from_numpy(c / scale)), spec.analyse(torch.from_numpy(n / scale))


def test_storm_composes_the_core_score_model(storm):
    assert isinstance(storm, StoRM) and type(storm.score) is ScoreModel
    assert storm.score.backbone.config.in_channels == 6
    assert storm.predictor.backbone.config.time_conditional is False


def test_zero_steps_return_the_predictor_output(storm):
    _, y = real_crop(64)
    with torch.no_grad():
        out = enhance_spectrogram(storm, y, SamplerConfig(steps=0), "storm")
        assert torch.equal(out, storm.predictor(y))


def test_enhancer_runs_all_three_modes_and_n0_equals_predictive(tmp_path, storm):
    model_dir = save_pretrained(storm, storm_config(steps=2), tmp_path / "storm")
    enhancer = Enhancer.from_pretrained(model_dir, device="cpu")
    noisy, rate = read_audio(DATA / "noisy" / "p287_001.wav")
    wave = noisy[0, :12000]
    outs = {m: enhancer(wave, rate, mode=m, seed=0) for m in ("storm", "score", "predictive")}
    assert all(o.shape == wave.shape and np.isfinite(o).all() for o in outs.values())
    assert not np.allclose(outs["storm"], outs["predictive"])
    assert np.array_equal(enhancer(wave, rate, mode="storm", steps=0), outs["predictive"])
    assert enhancer.config.default_mode == "storm"


def test_score_only_model_rejects_storm_mode(tiny_model_dir):
    enhancer = Enhancer.from_pretrained(tiny_model_dir, device="cpu")
    with pytest.raises(ValueError, match="storm"):
        enhancer(np.zeros(4000, np.float32), 16000, mode="storm")


class SpyScore(torch.nn.Module):
    """Records the first state it is evaluated at (x_T when there is no corrector)."""

    def __init__(self, sde):
        super().__init__()
        self.sde, self.first = sde, None

    def forward(self, x, cond, t):
        if self.first is None:
            self.first = (x.clone(), cond.clone(), t.clone())
        return torch.zeros_like(x)


def test_storm_start_distribution_has_mean_y_hat_and_std_sigma_T(storm):
    _, y = real_crop(64)
    spy = SpyScore(storm.sde)
    model = StoRM(storm.predictor, spy)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        enhance_spectrogram(
            model, y, SamplerConfig(steps=3, corrector_steps=0), "storm", generator=gen
        )
        y_hat = storm.predictor(y)
    x_T, cond, t = spy.first
    assert torch.allclose(t, torch.ones(1))
    assert torch.equal(cond, torch.cat([y, y_hat], dim=1))
    residual = (x_T - y_hat).flatten()  # 16 384 complex samples
    sigma_T = float(storm.sde.marginal_std(torch.ones(1)))
    assert abs(residual.mean()) < 5 * sigma_T / np.sqrt(residual.numel())
    assert abs(residual.abs().square().mean().sqrt() / sigma_T - 1) < 0.03


def test_storm_loss_is_the_alpha_mixture(storm):
    x0, y = real_crop(32)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    with torch.no_grad():
        y_hat = storm.predictor(y)
        pred = predictive_mse_loss(y_hat, x0)
        dsm = score_matching_loss(storm.score, x0, y_hat, torch.cat([y, y_hat], 1), generator=gen())
        # storm_loss draws its task coin first, then the DSM's t and z, from one generator
        g = gen()
        torch.rand(1, generator=g)
        dsm_after_coin = score_matching_loss(
            storm.score, x0, y_hat, torch.cat([y, y_hat], 1), generator=g
        )
        full = storm_loss(storm, x0, y, alpha=0.3, generator=gen())
    assert torch.allclose(full, 0.3 * pred + 0.7 * dsm_after_coin, rtol=1e-5)
    assert not torch.allclose(dsm, dsm_after_coin)


def test_spectral_predictive_loss_option(storm):
    x0, y = real_crop(32)
    spec = Spectrogram()
    spectral = PredictiveLoss(spec, mse_weight=0.0, spectral_weight=1.0)
    both = PredictiveLoss(spec, mse_weight=1.0, spectral_weight=1.0)
    assert spectral(x0, x0).abs().max() < 1e-6
    y_hat = storm.predictor(y)
    value = spectral(y_hat, x0)
    value.sum().backward()
    grads = [p.grad for p in storm.predictor.parameters() if p.grad is not None]
    assert value.min() > 0 and grads and all(torch.isfinite(g).all() for g in grads)
    assert torch.allclose(both(y_hat, x0), value + predictive_mse_loss(y_hat, x0), rtol=1e-5)
    storm.zero_grad()


def test_storm_checkpoint_round_trip(tmp_path, storm):
    save_pretrained(storm, storm_config(), tmp_path / "m")
    again, config = load_pretrained(tmp_path / "m")
    assert config.kind == "storm"
    _, y = real_crop(64)
    with torch.no_grad():
        assert torch.equal(again.predictor(y), storm.predictor(y))


def test_bad_storm_config_raises():
    with pytest.raises(ValueError, match="6"):
        replace(storm_config(), backbone=TINY)
    with pytest.raises(ValueError, match="predictor"):
        ModelConfig(kind="storm", backbone=replace(TINY, in_channels=6))


def test_tiny_storm_overfits_one_real_pair():
    from audiodiff.quickfit import fit

    torch.manual_seed(0)
    micro = replace(TINY, nf=16, ch_mult=(1, 2, 2))
    config = replace(
        storm_config(),
        backbone=replace(micro, in_channels=6),
        predictor=replace(micro, in_channels=2, time_conditional=False),
    )
    model = build_model(config)
    x0, y = real_crop(16)  # one real VB-DMD pair, 16 frames
    batch = (x0.repeat(4, 1, 1, 1), y.repeat(4, 1, 1, 1))

    def held_out_loss() -> float:  # the same t and z every time
        with torch.no_grad():
            gen = torch.Generator().manual_seed(123)
            return storm_loss(model, x0.repeat(8, 1, 1, 1), y.repeat(8, 1, 1, 1), generator=gen)

    before = held_out_loss().mean()
    fit(model, storm_loss, iter(lambda: batch, None), steps=250, lr=3e-3)
    after = held_out_loss().mean()
    assert after < before / 10, (before, after)
