"""Block-online enhancement with a causal predictor: the cached path (each hop runs the network on
its new frames only) gives the offline enhancement, at the documented latency, and no later."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.audio import read_audio
from audiodiff.checkpoint import build_model
from audiodiff.config import ModelConfig
from audiodiff.enhance import Enhancer
from audiodiff.nets import PRESETS
from audiodiff.nets.causal import CausalConv2d
from audiodiff.streaming import RealtimeEnhancer

PAIRS = Path(__file__).parent / "data" / "pairs"
CAUSAL = replace(PRESETS["ncsnpp_causal"], nf=8, ch_mult=(1, 2), in_channels=2)


def causal_model(lookahead: int, seed: int = 0, output: str = "estimate"):
    """A micro causal predictive model whose every layer does something (no near-zero init)."""
    config = ModelConfig(
        kind="predictive",
        backbone=None,
        predictor=replace(CAUSAL, lookahead=lookahead, time_conditional=False),
        predictor_output=output,
    )
    torch.manual_seed(seed)
    model = build_model(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim >= 2:
                param.normal_(0, 1 / param[0].numel() ** 0.5)
    return model, config


@pytest.fixture(scope="module")
def noisy():
    wave, _ = read_audio(PAIRS / "noisy" / "p287_001.wav")
    return wave[0][:9000]


def stream(rt: RealtimeEnhancer, x: np.ndarray, chunk: int) -> np.ndarray:
    pieces = [rt.push(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    out = np.concatenate(pieces + [rt.flush()])
    assert out.shape == (len(x) + rt.latency_samples,)
    return out[rt.latency_samples :]


@pytest.mark.parametrize(
    ("block", "lookahead", "output"),
    [(1, 0, "estimate"), (2, 1, "estimate"), (4, 2, "estimate"), (1, 2, "estimate"),
     (1, 2, "mask"), (4, 1, "mask")],
)  # fmt: skip
def test_cached_stream_equals_offline_enhancement(noisy, block, lookahead, output):
    model, config = causal_model(lookahead, output=output)
    offline = Enhancer(model, config, device="cpu")(noisy, 16000, mode="predictive")
    peak = float(np.abs(noisy).max())  # the offline gain, fixed for the stream
    rt = RealtimeEnhancer(model, config, block_frames=block, input_peak=peak)
    assert rt.lookahead_frames == lookahead and rt.window_frames == block
    streamed = stream(rt, noisy, chunk=300)
    assert np.abs(offline).max() > 0.01
    np.testing.assert_allclose(streamed, offline, atol=1e-5)


def test_each_hop_runs_the_network_on_its_new_frames_only(noisy):
    model, config = causal_model(1)
    widths: list[int] = []
    for module in model.modules():
        if isinstance(module, CausalConv2d):
            module.register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[2]))
    rt = RealtimeEnhancer(model, config, block_frames=2)
    for i in range(0, 4000, 128):  # one hop of samples at a time
        rt.push(noisy[i : i + 128])
    assert widths and set(widths) == {2}
    assert rt.stats.network_calls == rt.stats.blocks > 10


@pytest.mark.parametrize(("block", "lookahead"), [(1, 0), (4, 1), (2, 2)])
def test_latency_is_exact_and_tight(noisy, block, lookahead):
    model, config = causal_model(lookahead)
    rt = RealtimeEnhancer(model, config, block_frames=block)
    samples = 509 + (block - 1 + lookahead) * 128
    assert rt.latency_samples == samples

    class TooEager(RealtimeEnhancer):
        latency_samples = samples - 1

    eager = TooEager(model, config, block_frames=block)
    with pytest.raises(RuntimeError, match="fell behind"):
        for sample in noisy[:3000]:  # one sample at a time: every output is due at once
            eager.push(sample[None])


def test_future_input_does_not_change_past_output(noisy):
    model, config = causal_model(2)
    cut = 5000
    other = noisy.copy()
    other[cut:] = 0.9 * np.sign(np.sin(np.arange(len(noisy) - cut)))  # louder: the gain too
    rts = [RealtimeEnhancer(model, config, block_frames=2) for _ in range(2)]
    outs = [stream(rt, x, 700) for rt, x in zip(rts, (noisy, other))]
    unaffected = cut - rts[0].latency_samples  # aligned output j sees input up to j + latency
    np.testing.assert_array_equal(outs[0][:unaffected], outs[1][:unaffected])
    assert not np.allclose(outs[0][unaffected:cut], outs[1][unaffected:cut])  # look-ahead used


def test_window_settings_that_do_not_apply_are_refused():
    model, config = causal_model(1)
    with pytest.raises(ValueError, match="exactly 1 frames"):
        RealtimeEnhancer(model, config, lookahead_frames=4)
    with pytest.raises(ValueError, match="context"):
        RealtimeEnhancer(model, config, context_frames=16)
    assert RealtimeEnhancer(model, config, lookahead_frames=1, context_frames=0).latency_ms > 0
