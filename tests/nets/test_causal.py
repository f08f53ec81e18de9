"""The time-causal NCSN++ variant: streaming with cached state equals the offline causal forward
(the contract), causality with an exact look-ahead, and its layers against independent truths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal

from audiodiff.nets import PRESETS, NCSNpp, NCSNppConfig, build_backbone
from audiodiff.nets.causal import (
    CausalConv2d,
    CausalStream,
    FrameGroupNorm,
    FreqFIRDownsample,
    FreqFIRUpsample,
)

SMALL = {"nf": 8, "ch_mult": (1, 2, 2), "num_res_blocks": 1, "attn_resolutions": ()}
SMALL |= {"num_freqs": 32, "causal": True}


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Seeded random parameters (zero-initialised layers too) with unit-variance outputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            noise = torch.randn(param.shape, generator=gen)
            param.copy_(noise / math.sqrt(param[0].numel()) if param.ndim >= 2 else 0.1 * noise)


def _small_net(lookahead: int, time_conditional: bool = False, seed: int = 0) -> NCSNpp:
    torch.manual_seed(seed)
    net = build_backbone(
        {**SMALL, "lookahead": lookahead}, in_channels=2, time_conditional=time_conditional
    )
    _randomise_(net, seed)
    return net.eval()


def _streamed(net: NCSNpp, x: torch.Tensor, hop: int, **kwargs) -> torch.Tensor:
    stream = CausalStream(net, **kwargs)
    chunks = [stream.push(x[..., i : i + hop]) for i in range(0, x.shape[-1], hop)]
    return torch.cat([*chunks, stream.flush()], dim=-1)


@pytest.mark.parametrize("lookahead", [0, 1, 2])
@pytest.mark.parametrize("hop", [1, 2, 4])
def test_streaming_equals_offline_causal_forward(lookahead, hop):
    """THE CONTRACT: chunks of `hop` new frames, cached state -> the offline forward to 1e-5."""
    net = _small_net(lookahead)
    x = torch.randn(2, 2, 32, 19, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        offline = net(x)
        streamed = _streamed(net, x, hop)
    assert streamed.shape == offline.shape == (2, 2, 32, 19)
    assert offline.abs().max() > 0.1  # a network that does something
    torch.testing.assert_close(streamed, offline, rtol=0, atol=1e-5)


def test_streaming_a_time_conditional_network_and_restarting():
    net = _small_net(1, time_conditional=True, seed=2)
    x = torch.randn(1, 2, 32, 9, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.4])
    with torch.inference_mode():
        offline = net(x, t)
        stream = CausalStream(net, t=t)
        first = torch.cat([stream.push(x[..., :5]), stream.push(x[..., 5:]), stream.flush()], -1)
        again = torch.cat([stream.push(x), stream.flush()], -1)  # flush() reset the caches
    torch.testing.assert_close(first, offline, rtol=0, atol=1e-5)
    torch.testing.assert_close(again, offline, rtol=0, atol=1e-5)


def test_each_hop_computes_only_its_new_frames():
    """The cached path: every layer call inside a push sees the pushed frames alone (streamed
    tensors are (B, C, T, F))."""
    net = _small_net(2)
    widths: list[int] = []
    for module in net.modules():
        if isinstance(module, CausalConv2d):
            module.register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[2]))
    stream = CausalStream(net)
    with torch.inference_mode():
        for _ in range(3):
            stream.push(torch.randn(1, 2, 32, 2))
    assert widths and set(widths) == {2}


@pytest.mark.parametrize("lookahead", [0, 1, 2])
def test_future_input_does_not_change_past_output(lookahead):
    net = _small_net(lookahead, seed=4)
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(1, 2, 32, 16, generator=gen)
    changed = x.clone()
    changed[..., 10:] = torch.randn(1, 2, 32, 6, generator=gen)  # frames 10.. differ
    with torch.inference_mode():
        a, b = net(x), net(changed)
    last_unaffected = 10 - lookahead  # output frame t sees input frames up to t + lookahead
    torch.testing.assert_close(a[..., :last_unaffected], b[..., :last_unaffected])
    assert (a[..., last_unaffected] - b[..., last_unaffected]).abs().max() > 1e-4  # exact L


def test_frame_group_norm_normalises_each_frame_alone():
    norm = torch.nn.GroupNorm(4, 16, eps=1e-6)
    _randomise_(norm, 6)
    x = torch.randn(2, 16, 8, 5) * torch.linspace(0.1, 10, 5)  # frames of very different level
    per_frame = torch.cat([norm(x[..., t : t + 1]) for t in range(5)], dim=-1)
    torch.testing.assert_close(FrameGroupNorm.from_norm(norm)(x), per_frame)


def _upfirdn_freq(x: np.ndarray, taps: np.ndarray, up: bool) -> np.ndarray:
    """StyleGAN2 upfirdn (factor 2, pad K/2 [- 1]) along axis 2 only, via scipy."""
    half, size = len(taps) // 2, x.shape[2]
    if up:
        full = signal.upfirdn(2.0 * taps / taps.sum(), x, up=2, axis=2)
        return np.take(full, np.arange(half - 1, half - 1 + 2 * size), axis=2)
    full = signal.upfirdn(taps / taps.sum(), x, axis=2)
    return np.take(full, np.arange(half, half + size, 2), axis=2)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 5, 3)])
def test_frequency_only_resampling_matches_scipy_upfirdn(taps):
    x = torch.randn(2, 3, 8, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    down = FreqFIRDownsample(taps).double()(x)
    up = FreqFIRUpsample(taps).double()(x)
    np.testing.assert_allclose(down.numpy(), _upfirdn_freq(x.numpy(), np.array(taps), False))
    np.testing.assert_allclose(up.numpy(), _upfirdn_freq(x.numpy(), np.array(taps), True))


def test_causal_variant_keeps_the_parameter_names_and_shapes():
    """A non-causal network of the same widths warm-starts the causal one (less the attention
    in the bottleneck); the non-causal default is untouched."""
    plain = build_backbone({**SMALL, "causal": False}, in_channels=2, time_conditional=False)
    causal = build_backbone(SMALL, in_channels=2, time_conditional=False)
    plain_shapes = {k: v.shape for k, v in plain.state_dict().items() if ".attn." not in k}
    assert {k: v.shape for k, v in causal.state_dict().items()} == plain_shapes
    causal.load_state_dict(plain.state_dict(), strict=False)
    kinds = {type(m) for m in plain.modules()}
    assert not kinds & {CausalConv2d, FrameGroupNorm, FreqFIRDownsample, FreqFIRUpsample}
    assert NCSNppConfig().causal is False and NCSNppConfig().lookahead == 0


def test_causal_network_takes_any_number_of_frames():
    net = build_backbone("ncsnpp_causal", in_channels=2, time_conditional=False).eval()
    with torch.inference_mode():
        assert net(torch.randn(1, 2, 256, 7)).shape == (1, 2, 256, 7)
    assert PRESETS["ncsnpp_causal"].time_multiple == 1
    with pytest.raises(ValueError, match="multiple"):
        net(torch.randn(1, 2, 250, 7))


@pytest.mark.parametrize(
    "changes",
    [
        {"lookahead": 1},  # look-ahead needs the causal variant
        {"causal": True, "attn_resolutions": (16,)},
        {"causal": True, "lookahead": 3},
        {"causal": True, "lookahead": -1},
        {"causal": 1},
    ],
)
def test_bad_causal_config_raises(changes):
    with pytest.raises(ValueError, match="invalid NCSNppConfig"):
        NCSNppConfig(**{**PRESETS["ncsnpp_tiny"].to_dict(), **changes})


def test_stream_refuses_a_non_causal_network():
    with pytest.raises(ValueError, match="causal"):
        CausalStream(build_backbone("ncsnpp_tiny", in_channels=2, time_conditional=False))


def test_pushes_switch_onednn_off_and_the_last_one_out_restores_it():
    from audiodiff.nets.causal import native_convolutions

    before = torch.backends.mkldnn.enabled
    seen: list[bool] = []
    net = _small_net(1)
    conv = next(m for m in net.modules() if isinstance(m, CausalConv2d))
    conv.register_forward_pre_hook(lambda m, args: seen.append(torch.backends.mkldnn.enabled))
    with torch.inference_mode():
        CausalStream(net).push(torch.randn(1, 2, 32, 2))
    assert seen == [False] and torch.backends.mkldnn.enabled == before
    with native_convolutions():  # two overlapping users: the inner exit keeps it off
        with native_convolutions():
            assert not torch.backends.mkldnn.enabled
        assert not torch.backends.mkldnn.enabled
    assert torch.backends.mkldnn.enabled == before
