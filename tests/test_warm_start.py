"""Warm start of a time-conditional network from a time-free predictor, and the bridge from Ŷ
(a ``bridge`` model with a predictor): at initialisation both equal the predictor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.checkpoint import build_model, save_pretrained
from audiodiff.config import ModelConfig
from audiodiff.enhance import Enhancer
from audiodiff.losses import DataPredictionLoss, perturb
from audiodiff.models import StoRM
from audiodiff.nets import build_backbone
from audiodiff.spec import Spectrogram
from audiodiff.train import build_training_model, make_loss
from audiodiff.training.recipe import RecipeError, load_recipe
from audiodiff.training.warm_start import warm_start_from_predictor

REPO = Path(__file__).resolve().parents[1]
SMALL = {"nf": 8, "ch_mult": [1, 2, 2], "num_freqs": 32}
BRIDGE = {
    "kind": "bridge",
    "backbone": {"preset": "ncsnpp_tiny", "nf": 8, "in_channels": 6},
    "predictor": {"preset": "ncsnpp_tiny", "nf": 8, "in_channels": 2, "time_conditional": False},
    "sde": {"name": "sbve", "k": 2.6, "c": 0.4},
    "loss_type": "data_prediction",
    "network_scaling": None,
    "c_out": "1",
    "sampler": {"method": "sb_ode", "steps": 3, "t_eps": 1e-4},
}


def trained_like(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random non-zero weights everywhere (the zero-initialised output convs included)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=generator))
    return net


@pytest.mark.parametrize("skips", [True, False], ids=["pyramids", "no-pyramids"])
@pytest.mark.parametrize("in_channels", [4, 6])
def test_warm_started_network_equals_the_predictor_for_every_t(skips, in_channels):
    pyramids = {"input_skip": skips, "output_skip": skips}
    source = trained_like(build_backbone("ncsnpp_tiny", **SMALL, **pyramids, in_channels=2,
                                         time_conditional=False), seed=0)  # fmt: skip
    target = trained_like(build_backbone("ncsnpp_tiny", **SMALL, **pyramids,
                                         in_channels=in_channels), seed=1)  # fmt: skip
    warm_start_from_predictor(target, source)
    y = torch.randn(2, 2, 32, 16, generator=torch.Generator().manual_seed(2))
    expected = source(y)
    for t in (1e-4, 0.03, 0.4, 1.0):
        others = torch.randn(2, in_channels, 32, 16)  # x_t and Ŷ: anything
        others[:, 2:4] = y
        got = target(others, torch.full((2,), t))
        assert (got - expected).abs().max() <= 1e-6 * max(1.0, expected.abs().max())
    # and training can move off it: the time injections exist and get a gradient
    target(others, torch.full((2,), 0.5)).square().sum().backward()
    grads = [p.grad for n, p in target.named_parameters() if "time_proj.weight" in n]
    assert grads and any(g.abs().sum() > 0 for g in grads)


def test_warm_start_refuses_another_preset_or_direction():
    source = build_backbone("ncsnpp_tiny", **SMALL, in_channels=2, time_conditional=False)
    with pytest.raises(ValueError, match="same nf"):
        warm_start_from_predictor(build_backbone("ncsnpp_tiny", **{**SMALL, "nf": 16}), source)
    timed = build_backbone("ncsnpp_tiny", **SMALL)
    with pytest.raises(ValueError, match="time-free network to a time-conditional"):
        warm_start_from_predictor(source, timed)


def test_bridge_with_a_predictor_config():
    config = ModelConfig.from_dict(BRIDGE)
    assert config.modes == ("bridge", "predictive") and config.default_mode == "bridge"
    assert isinstance(build_model(config), StoRM)
    plain = {"preset": "ncsnpp_tiny", "in_channels": 4}
    alone = ModelConfig.from_dict({**BRIDGE, "predictor": None, "backbone": plain})
    assert alone.modes == ("bridge",)
    with pytest.raises(ValueError, match="must map 6 channels"):
        ModelConfig.from_dict({**BRIDGE, "backbone": {"preset": "ncsnpp_tiny", "in_channels": 4}})
    with pytest.raises(ValueError, match="cannot run mode 'storm'"):
        ModelConfig.from_dict({**BRIDGE, "sampler": {**BRIDGE["sampler"], "mode": "storm"}})


@pytest.fixture
def predictor_dir(tmp_path) -> Path:
    config = ModelConfig.from_dict({"kind": "predictive", "backbone": None,
                                    "predictor": BRIDGE["predictor"]})  # fmt: skip
    model = trained_like(build_model(config), seed=3)
    return save_pretrained(model, config, tmp_path / "predictor")


def bridge_recipe(predictor_dir: Path, *overrides: str):
    return load_recipe(
        REPO / "recipes" / "pool" / "bridge_hat_tiny.yaml",
        ["model.backbone.nf=8", "model.predictor.nf=8", f"train.warm_start={predictor_dir}",
         f"train.init_predictor={predictor_dir}", "data.clean=c", "data.noise=n", *overrides],
    )  # fmt: skip


def test_warm_started_bridge_from_prediction_enhances_exactly_as_its_predictive_mode(
    predictor_dir,
):
    torch.manual_seed(0)  # the bridge network's own initial weights: the same in any test order
    recipe = bridge_recipe(predictor_dir)
    model = build_training_model(recipe).eval()
    assert not any(p.requires_grad for p in model.predictor.parameters())  # frozen
    enhancer = Enhancer(model, recipe.model, device="cpu")
    noisy = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        bridge = torch.as_tensor(enhancer(noisy, 16000))
        predictive = torch.as_tensor(enhancer(noisy, 16000, mode="predictive"))
        alone = Enhancer.from_pretrained(predictor_dir, device="cpu")
        reference = torch.as_tensor(alone(noisy, 16000))
    assert torch.equal(predictive, reference)
    # Exact in real arithmetic: every SB-ODE step mixes x_t = Ŷ and x̂0 = Ŷ with weights summing
    # to 1. In float32 each step, the power-law decompression and the overlap-add round; on the
    # small output of random weights that reaches ~1.3e-5 of its peak, so allow 1e-4 (a wrong
    # warm start is off by the order of the signal itself).
    assert (bridge - reference).abs().max() <= 1e-4 * reference.abs().max()
    assert (bridge - noisy).abs().max() > 1e-3  # not the identity: Ŷ of random weights


def test_bridge_from_prediction_loss_is_the_data_prediction_loss_around_y_hat(predictor_dir):
    recipe = bridge_recipe(predictor_dir)
    model = build_training_model(recipe)
    spec = Spectrogram(recipe.model.spec)
    y = spec.analyse(0.1 * torch.randn(2, 63 * 128, generator=torch.Generator().manual_seed(5)))
    x0 = 0.5 * y
    loss = make_loss(recipe, spec)(model, x0, y, generator=torch.Generator().manual_seed(6))
    y_hat = model.predictor(y)
    direct = DataPredictionLoss(spec, recipe.model.l1_weight)(
        model.score, x0, y_hat, torch.cat([y, y_hat], 1), t_eps=0.03,
        generator=torch.Generator().manual_seed(6),
    )  # fmt: skip
    assert torch.allclose(loss, direct)
    loss.sum().backward()  # reaches the bridge network, not the frozen predictor
    assert all(p.grad is None for p in model.predictor.parameters())
    assert model.score.backbone.input_conv.weight.grad.abs().sum() > 0


def _multiscale(pred, target):
    from audiodiff.ddsp import multiscale_spectral_loss

    return multiscale_spectral_loss(pred, target)


def _loudness(pred, target):
    from audiodiff.perceptual_loss import LoudnessDisturbanceLoss

    return LoudnessDisturbanceLoss(16000)(pred, target)


@pytest.mark.parametrize(
    ("key", "term"), [("spectral_weight", _multiscale), ("loudness_weight", _loudness)]
)
def test_bridge_waveform_loss_weights_add_their_term_of_x0_hat(predictor_dir, key, term):
    recipe = bridge_recipe(predictor_dir, f"train.{key}=0.01")
    plain = bridge_recipe(predictor_dir)
    model = build_training_model(recipe)
    spec = Spectrogram(recipe.model.spec)
    y = spec.analyse(0.1 * torch.randn(2, 63 * 128, generator=torch.Generator().manual_seed(5)))
    x0 = 0.5 * y
    with_term, without = (
        make_loss(r, spec)(model, x0, y, generator=torch.Generator().manual_seed(6))
        for r in (recipe, plain)
    )
    assert torch.all(with_term > without)
    # both draw the same t and z from the seed, so the difference is the term of x̂0
    y_hat = model.predictor(y)
    x_t, _, _, t, _ = perturb(model.score, x0, y_hat, generator=torch.Generator().manual_seed(6))
    x_hat = model.score(x_t, torch.cat([y, y_hat], 1), t)
    length = (x0.shape[-1] - 1) * recipe.model.spec.hop_length
    recomputed = 0.01 * term(*(spec.synthesise(s, length) for s in (x_hat, x0)))
    assert torch.allclose(with_term - without, recomputed, rtol=1e-4, atol=1e-6)


def test_bridge_t_end_prob_trains_that_share_at_the_prior(predictor_dir):
    recipe = bridge_recipe(predictor_dir, "train.t_end_prob=0.5")
    model = build_training_model(recipe)
    spec = Spectrogram(recipe.model.spec)
    y = spec.analyse(0.1 * torch.randn(400, 15 * 128, generator=torch.Generator().manual_seed(7)))
    x0 = 0.5 * y
    x_t, _, _, t, _ = perturb(
        model.score, x0, y, generator=torch.Generator().manual_seed(8), t_end_prob=0.5
    )
    at_end = t == model.score.sde.T
    assert 150 < int(at_end.sum()) < 250  # Binomial(400, 0.5): 200 ± 10 (5 σ)
    assert torch.equal(x_t[at_end], y[at_end])  # the bridge's marginal at T is the point y
    assert t[~at_end].max() < model.score.sde.T and t[~at_end].min() >= 0.03
    # the recipe's loss draws the same t: with the share at 0 no example is at T
    loss = make_loss(recipe, spec)
    seen = []
    forward = model.score.forward
    model.score.forward = lambda x, c, tt: seen.append(tt) or forward(x, c, tt)
    loss(model, x0[:64], y[:64], generator=torch.Generator().manual_seed(8))
    make_loss(bridge_recipe(predictor_dir), spec)(
        model, x0[:64], y[:64], generator=torch.Generator().manual_seed(8)
    )
    assert (seen[0] == 1.0).any() and not (seen[1] == 1.0).any()


def test_warm_start_recipe_checks(predictor_dir):
    with pytest.raises(RecipeError, match="warm_start needs"):
        bridge_recipe(predictor_dir, f"train.init_model={predictor_dir}")
    with pytest.raises(RecipeError, match="applies to storm models"):
        load_recipe(REPO / "recipes" / "pool" / "bridge_tiny.yaml", ["train.alpha=0.3"])
    load_recipe(REPO / "recipes" / "pool" / "bridge_tiny.yaml", ["train.spectral_weight=0.01"])
    with pytest.raises(RecipeError, match="spectral_weight needs a data estimate"):
        load_recipe(REPO / "recipes" / "vbdmd" / "sgmse.yaml", ["train.spectral_weight=0.01"])
    for key in ("t_end_prob", "loudness_weight"):
        with pytest.raises(RecipeError, match=f"{key} applies to bridge models, not 'score'"):
            load_recipe(REPO / "recipes" / "vbdmd" / "sgmse.yaml", [f"train.{key}=0.5"])
    with pytest.raises(RecipeError, match="need 0 <= train.t_end_prob < 1"):
        load_recipe(REPO / "recipes" / "pool" / "bridge_tiny.yaml", ["train.t_end_prob=1"])


def test_bridge_from_prediction_streams_in_both_modes(predictor_dir):
    from audiodiff.streaming import RealtimeEnhancer

    recipe = bridge_recipe(predictor_dir)
    model = build_training_model(recipe).eval()
    noisy = (0.1 * torch.randn(8000, generator=torch.Generator().manual_seed(7))).numpy()
    outs = {}
    for mode in ("bridge", "predictive"):
        rt = RealtimeEnhancer(model, recipe.model, mode=mode, block_frames=4, lookahead_frames=2)
        outs[mode] = np.concatenate([rt.push(noisy), rt.flush()])
        blocks = rt.stats.summary()["blocks"]
        calls = rt.stats.network_calls
        assert calls == blocks * (1 + recipe.model.sampler.steps if mode == "bridge" else 1)
    assert np.isfinite(outs["bridge"]).all()
    # warm-started: the bridge streams what the predictor streams
    assert (
        np.abs(outs["bridge"] - outs["predictive"]).max() <= 1e-4 * np.abs(outs["predictive"]).max()
    )


def test_bridge_from_y_pilot_recipe_starts_at_its_predictor(predictor_dir):
    recipe = load_recipe(
        REPO / "recipes" / "pool" / "bridge_y_warm_tiny.yaml",
        [
            "model.backbone.nf=8",
            f"train.warm_start={predictor_dir}",
            "data.clean=c",
            "data.noise=n",
        ],
    )
    assert recipe.model.predictor is None and recipe.model.modes == ("bridge",)
    assert (recipe.model.sampler.steps, recipe.model.sampler.model_time) == (1, "previous")
    torch.manual_seed(0)
    model = build_training_model(recipe).eval()
    noisy = 0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        bridge = torch.as_tensor(Enhancer(model, recipe.model, device="cpu")(noisy, 16000))
        reference = torch.as_tensor(
            Enhancer.from_pretrained(predictor_dir, device="cpu")(noisy, 16000)
        )
    # Its one SB-ODE step from x_T = y to t_eps keeps a small share of y beside x̂0 = Ŷ (here
    # 3e-3 of the peak); a missing warm start is off by the order of the signal.
    assert (bridge - reference).abs().max() <= 1e-2 * reference.abs().max()
    assert (bridge - noisy).abs().max() > 1e-3
