"""The Schrödinger-bridge model kind: sampler oracle on real speech, and the kind reachable from
every inference entry point (Enhancer, stream, bench, eval/compare mode specs)."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.checkpoint import build_model, load_pretrained, save_pretrained
from audiodiff.config import ModelConfig, SamplerConfig
from audiodiff.enhance import Enhancer, run_sampler
from audiodiff.metrics import si_sdr
from audiodiff.sdes import SBVESDE
from audiodiff.spec import SpecConfig, Spectrogram
from audiodiff.streaming import RealtimeEnhancer

PAIRS = Path(__file__).resolve().parent / "data" / "pairs"
CONFIG = {
    "kind": "bridge",
    "backbone": {"preset": "ncsnpp_tiny", "nf": 8, "ch_mult": [1, 2, 2], "out_scale_at": "output"},
    "sde": {"name": "sbve", "k": 2.6, "c": 0.4},
    "loss_type": "data_prediction",
    "network_scaling": None,
    "c_out": "1",
    "sampler": {"method": "sb_ode", "steps": 3, "t_eps": 1e-4},
}


def _pair(name="p287_001.wav"):
    clean, rate = sf.read(PAIRS / "clean" / name, dtype="float32")
    noisy, _ = sf.read(PAIRS / "noisy" / name, dtype="float32")
    assert rate == 16000
    return clean, noisy


@pytest.mark.parametrize("model_time", ["current", "previous"])
@pytest.mark.parametrize("method", ["sb_ode", "sb_sde"])
def test_bridge_sampler_with_the_exact_clean_estimate_recovers_real_speech(method, model_time):
    clean, noisy = _pair()
    spec = Spectrogram(SpecConfig())
    x0, y = (spec.analyse(torch.from_numpy(w)[None]) for w in (clean, noisy))  # (1, 1, F, T)
    calls = []

    def oracle(x, mean_target, t):  # the network that knows the answer
        calls.append(float(t[0]))
        return x0

    settings = SamplerConfig(method=method, steps=4, t_eps=1e-4, model_time=model_time)
    gen = torch.Generator().manual_seed(0)
    out = run_sampler(oracle, SBVESDE(k=2.6, c=0.4), y, settings, generator=gen)
    wave = spec.synthesise(out, len(clean))[0].numpy()
    assert si_sdr(clean, noisy) < 15  # a real noisy input
    assert si_sdr(clean, wave) > 40
    grid = np.linspace(1.0, 1e-4, 5)
    # "current": told each step's target time (as sgmse); "previous": the time of the state it
    # is given, so the prior's T first
    expected = grid[1:] if model_time == "current" else grid[:-1]
    assert calls == pytest.approx(expected.tolist(), rel=1e-6)


def test_sampler_config_refuses_an_unknown_model_time():
    with pytest.raises(ValueError, match="model_time must be one of"):
        SamplerConfig(method="sb_ode", model_time="next")


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    torch.manual_seed(0)
    config = ModelConfig.from_dict(CONFIG)
    model = build_model(config).eval()
    with torch.no_grad():  # untrained, but not the near-zero initial output
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    folder = save_pretrained(model, config, tmp_path_factory.mktemp("bridge") / "model")
    return load_pretrained(folder)


def test_enhancer_runs_a_bridge_model_in_its_default_mode(bridge):
    model, config = bridge
    _, noisy = _pair()
    calls = []
    hook = model.backbone.register_forward_hook(lambda *args: calls.append(1))
    try:
        out = Enhancer(model, config)(noisy[:16000], 16000, seed=0)
        sde_out = Enhancer(model, config)(noisy[:16000], 16000, seed=0, method="sb_sde")
    finally:
        hook.remove()
    assert config.default_mode == "bridge" and len(calls) == 2 * 3
    assert out.shape == (16000,) and np.isfinite(out).all() and np.abs(out).max() > 0
    assert not np.allclose(out, sde_out)  # the SDE variant adds noise
    with pytest.raises(ValueError, match="bridge"):
        Enhancer(model, config)(noisy[:16000], 16000, mode="score")


def test_bridge_model_streams(bridge):
    model, config = bridge
    _, noisy = _pair()
    rt = RealtimeEnhancer(model, config, block_frames=4, lookahead_frames=2, steps=2)
    assert rt.mode == "bridge"
    out = np.concatenate([rt.push(noisy[:8000]), rt.flush()])
    assert np.isfinite(out).all() and len(out) >= 8000
    with pytest.raises(ValueError, match="bridge"):
        RealtimeEnhancer(model, config, mode="diffusion")


def test_bench_and_compare_know_the_bridge_mode(eval_script):
    from audiodiff.bench.measure import model_config
    from audiodiff.bench.speed import steps_for

    assert model_config("bridge", "ncsnpp_tiny").kind == "bridge"
    assert steps_for("bridge", "sb_ode", 5, 1) == (5, 0) and steps_for("bridge", "pc", 5, 1) is None
    assert steps_for("score", "sb_ode", 5, 1) is None
    compare = eval_script("compare")
    assert compare.parse_mode_spec("bridge:sb_sde@8") == {
        "mode": "bridge",
        "method": "sb_sde",
        "steps": 8,
    }
