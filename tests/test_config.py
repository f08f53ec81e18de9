"""ModelConfig: the parametrisation fields, older config files, and combinations that cannot work
(each refused when the config is loaded, with one line)."""

import pytest

from audiodiff.config import ModelConfig
from audiodiff.nets import PRESETS

TINY = {"preset": "ncsnpp_tiny", "nf": 8, "ch_mult": [1, 2]}
BRIDGE = {
    "kind": "bridge",
    "backbone": {**TINY, "out_scale_at": "output"},
    "sde": {"name": "sbve", "k": 2.6, "c": 0.4},
    "loss_type": "data_prediction",
    "network_scaling": None,
    "c_out": "1",
    "sampler": {"method": "sb_ode", "steps": 4, "t_eps": 1e-4},
}


def test_defaults_are_the_2023_sgmse_network_and_round_trip():
    config = ModelConfig.from_dict({"backbone": TINY})
    param = config.parametrisation
    assert (param.loss_type, param.network_scaling, param.c_out) == ("score_matching", "1/t", "-1")
    assert ModelConfig.from_dict(config.to_dict()) == config
    bridge = ModelConfig.from_dict(BRIDGE)
    assert bridge.default_mode == "bridge" and ModelConfig.from_dict(bridge.to_dict()) == bridge


@pytest.mark.parametrize("scaling", ["1/t", "1/sigma"])
def test_older_config_files_with_output_scaling_load(scaling):
    config = ModelConfig.from_dict({"backbone": TINY, "output_scaling": scaling})
    assert config.network_scaling == scaling and "output_scaling" not in config.to_dict()
    with pytest.raises(ValueError, match="not both"):
        ModelConfig.from_dict({"backbone": TINY, "output_scaling": "1/t", "network_scaling": None})


def test_presets_are_reachable_by_name():
    config = ModelConfig.from_dict({**BRIDGE, "backbone": "ncsnpp_v2"})
    assert config.backbone == PRESETS["ncsnpp_v2"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "score"}, "sbve"),  # a bridge SDE in a score model
        ({"sde": {"name": "ouve"}}, "cannot drive"),  # a bridge on the OUVE SDE
        ({"loss_type": "score_matching"}, "data_prediction"),
        ({"sampler": {"method": "pc"}}, "cannot sample"),  # data prediction, non-bridge sampler
        ({"loss_type": "denoiser"}, "loss_type"),
        ({"c_in": "sigma"}, "c_in"),
        ({"network_scaling": "t"}, "network_scaling"),
        ({"loss_weighting": "edm"}, "loss_weighting"),
        ({"l1_weight": -1.0}, "l1_weight"),
        ({"sigma_data": 0.0}, "sigma_data"),
        ({"sampler": {"method": "sb_ode", "mode": "score"}}, "mode"),
        # a bridge from the predictor's estimate sees [x_t, y, Ŷ]: 6 channels, not 4
        ({"predictor": {**TINY, "in_channels": 2, "time_conditional": False}}, "6 channels"),
    ],
)
def test_invalid_bridge_combinations_fail_on_load(changes, message):
    with pytest.raises(ValueError, match=message) as err:
        ModelConfig.from_dict({**BRIDGE, **changes})
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"sde": {"name": "sbve"}}, "sbve"),
        ({"loss_type": "data_prediction"}, "data_prediction"),
        ({"sampler": {"method": "sb_sde"}}, "cannot sample"),
        ({"loss_type": "denoiser", "c_out": "-1"}, "c_out"),
        ({"loss_type": "denoiser", "loss_weighting": "edm", "c_out": "1"}, None),
        ({"loss_type": "score_matching", "loss_weighting": "edm"}, "loss_weighting"),
    ],
)
def test_score_model_combinations(changes, message):
    doc = {"backbone": TINY, **changes}
    if message is None:
        assert ModelConfig.from_dict(doc).loss_weighting == "edm"
        return
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict(doc)


def test_storm_models_train_with_score_matching_only():
    storm = {
        "kind": "storm",
        "backbone": {**TINY, "in_channels": 6},
        "predictor": {**TINY, "in_channels": 2, "time_conditional": False},
    }
    assert ModelConfig.from_dict(storm).kind == "storm"
    with pytest.raises(ValueError, match="storm"):
        ModelConfig.from_dict({**storm, "loss_type": "denoiser", "c_out": "1"})


def test_bundled_model_loads_and_computes_exactly_as_before():
    """The bundled folder (written before the parametrisation fields existed) gives the 2023
    formula bit for bit: score = −DNN([x_t, y, Ŷ], t) with 1/t on the features."""
    import torch

    from audiodiff import DEFAULT_MODEL
    from audiodiff.checkpoint import load_pretrained
    from audiodiff.models import channels_to_complex, complex_to_channels

    model, config = load_pretrained(DEFAULT_MODEL)
    assert (config.network_scaling, config.c_out, config.loss_type) == (
        "1/t",
        "-1",
        "score_matching",
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, config.spec.num_freqs, 16, dtype=torch.complex64, generator=gen)
    cond = torch.randn(2, 2, config.spec.num_freqs, 16, dtype=torch.complex64, generator=gen)
    t = torch.tensor([0.8, 0.2])
    with torch.no_grad():
        net_in = complex_to_channels(torch.cat([x, cond], dim=1))
        before = -channels_to_complex(model.score.backbone(net_in, t, out_scale=1.0 / t))
        assert torch.equal(model.score(x, cond, t), before)


def test_a_mask_predictor_passes_the_mixture_through_while_its_output_is_zero():
    import torch

    from audiodiff.checkpoint import build_model

    doc = {
        "kind": "predictive",
        "backbone": None,
        "predictor": {**TINY, "in_channels": 2, "time_conditional": False},
    }
    config = ModelConfig.from_dict({**doc, "predictor_output": "mask"})
    assert ModelConfig.from_dict(config.to_dict()) == config
    model = build_model(config)
    torch.nn.init.zeros_(model.backbone.output_proj.weight)
    torch.nn.init.zeros_(model.backbone.output_proj.bias)
    y = torch.randn(1, 1, 256, 8, dtype=torch.complex64)
    assert torch.equal(model(y), y)  # Ŷ = y·(1 + 0)
    with torch.no_grad():
        model.backbone.output_proj.bias.copy_(torch.tensor([-0.5, 0.0]))  # F = −0.5: half of y
    torch.testing.assert_close(model(y), 0.5 * y)
    with pytest.raises(ValueError, match="predictor_output must be one of"):
        ModelConfig.from_dict({**doc, "predictor_output": "gain"})
    with pytest.raises(ValueError, match="with a predictor only"):
        ModelConfig.from_dict({"backbone": TINY, "predictor_output": "mask"})
