"""NCSN++ backbone: equivalence with the reference ``sgmse`` implementation, presets, shapes,
configuration checks and FIR resampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import signal

from audiodiff.models import complex_to_channels
from audiodiff.nets import (
    PRESETS,
    NCSNpp,
    NCSNppConfig,
    build_backbone,
    convert_reference_state_dict,
)
from audiodiff.nets.layers import fir_downsample_2d, fir_kernel_2d, fir_upsample_2d


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _meta_model(config: NCSNppConfig) -> NCSNpp:
    with torch.device("meta"):
        return NCSNpp(config)


def _randomise_(module: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter (zero-initialised ones too) with seeded random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if param.ndim >= 2:  # conv / linear / NIN weights: unit-variance outputs
                param.copy_(noise / math.sqrt(param[0].numel()))
            elif name.endswith(".W"):  # Fourier frequencies
                param.copy_(noise * 16.0)
            elif "GroupNorm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:  # biases
                param.copy_(0.1 * noise)


def _reference_network(config: NCSNppConfig) -> torch.nn.Module:
    """The reference sgmse NCSNpp with the same architecture as ``config`` (4 input channels)."""
    from sgmse.backbones.ncsnpp import NCSNpp as ReferenceNCSNpp

    return ReferenceNCSNpp(
        nf=config.nf,
        ch_mult=config.ch_mult,
        num_res_blocks=config.num_res_blocks,
        attn_resolutions=config.attn_resolutions,
        image_size=config.num_freqs,
        fourier_scale=config.fourier_scale,
        conditional=config.time_conditional,
        scale_by_sigma=config.time_conditional,
    )


def _compare_with_reference(config: NCSNppConfig, frames: int):
    """Run the reference and our converted network on the same input; return both outputs."""
    torch.manual_seed(0)
    reference = _reference_network(config).eval()
    _randomise_(reference, seed=1)
    ours = NCSNpp(config).eval()
    ours.load_state_dict(convert_reference_state_dict(reference.state_dict(), config), strict=True)

    gen = torch.Generator().manual_seed(2)
    x_real = torch.randn(2, 4, config.num_freqs, frames, generator=gen)  # [x.re, x.im, y.re, y.im]
    x_complex = torch.complex(x_real[:, 0::2], x_real[:, 1::2])  # (B, 4, F, T) -> (B, 2, F, T)
    t = torch.tensor([0.05, 0.7])  # the reference needs t even when it ignores it
    with torch.inference_mode():
        expected = reference(x_complex, t)  # (B, 1, F, T) complex
        time_args = (t, 1.0 / t) if config.time_conditional else ()
        actual = ours(x_real, *time_args)
    expected = torch.view_as_real(expected[:, 0]).permute(0, 3, 1, 2)  # (B,F,T,2) -> (B,2,F,T)
    return expected, actual


def _assert_close(expected: torch.Tensor, actual: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 1e-2, "outputs are trivially small; the test would prove nothing"
    error = (expected - actual).abs().max().item()
    assert error <= 1e-4 * scale, f"max abs error {error:.3g} at output scale {scale:.3g}"


# --------------------------------------------------------------------------------------------
# 1. Reference equivalence


def test_matches_reference_small_config_with_attention():
    # Levels have 64, 32, 16 bins: attention after both blocks of level 1, in the decoder at
    # level 1, and in the bottleneck.
    config = NCSNppConfig(
        nf=16, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(32,), num_freqs=64
    )
    _assert_close(*_compare_with_reference(config, frames=32))


def test_matches_reference_default_layout_with_tiny_width():
    # The reference's default 7-level layout (attention at 16 bins), narrowed to nf=8 for speed.
    _assert_close(*_compare_with_reference(NCSNppConfig(nf=8), frames=64))


def test_matches_reference_without_time_conditioning():
    # The reference still builds the Fourier layer and per-block Dense layers; they are unused
    # and dropped by the converter.
    config = NCSNppConfig(
        nf=16,
        ch_mult=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(16,),
        num_freqs=32,
        time_conditional=False,
    )
    _assert_close(*_compare_with_reference(config, frames=16))


def test_converter_reports_bad_state_dicts():
    config = NCSNppConfig(
        nf=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), num_freqs=32
    )
    state = _reference_network(config).state_dict()
    assert set(convert_reference_state_dict(state, config)) == set(_meta_model(config).state_dict())

    missing = {k: v for k, v in state.items() if k != "output_layer.bias"}
    with pytest.raises(ValueError, match="missing"):
        convert_reference_state_dict(missing, config)
    with pytest.raises(ValueError, match="unexpected"):
        convert_reference_state_dict({**state, "all_modules.999.weight": torch.zeros(1)}, config)
    with pytest.raises(ValueError, match="shape mismatch"):
        convert_reference_state_dict(state, NCSNppConfig(**{**config.to_dict(), "nf": 32}))


# --------------------------------------------------------------------------------------------
# 2. Parameter counts


def test_default_preset_parameter_count_matches_reference():
    from sgmse.backbones.ncsnpp import NCSNpp as ReferenceNCSNpp

    reference_count = _count(ReferenceNCSNpp())
    ours = _count(_meta_model(PRESETS["ncsnpp"]))
    print(f"ncsnpp: ours {ours:,} reference {reference_count:,}")
    assert ours == reference_count
    assert 65.0e6 < ours < 66.0e6


def test_smaller_preset_parameter_counts():
    counts = {name: _count(_meta_model(cfg)) for name, cfg in PRESETS.items()}
    print({name: f"{count / 1e6:.2f} M" for name, count in counts.items()})
    assert abs(counts["ncsnpp_m"] - 27.8e6) < 0.2e6
    assert 4.0e6 < counts["ncsnpp_s"] < 6.0e6
    assert counts["ncsnpp_tiny"] <= 1.5e6


# --------------------------------------------------------------------------------------------
# 3. Shapes, modes and configuration


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("in_channels", [2, 4, 6])
@pytest.mark.parametrize("time_conditional", [False, True])
def test_every_preset_variant_is_constructible(name, in_channels, time_conditional):
    config = NCSNppConfig(
        **{
            **PRESETS[name].to_dict(),
            "in_channels": in_channels,
            "time_conditional": time_conditional,
        }
    )
    model = _meta_model(config)
    assert model.output_proj.in_channels == in_channels
    assert (model.time_embed is not None) == time_conditional


@pytest.mark.parametrize(
    ("name", "in_channels", "time_conditional"),
    [
        ("ncsnpp_tiny", 2, False),
        ("ncsnpp_tiny", 4, True),
        ("ncsnpp_s", 4, True),
    ],
)
def test_preset_forward_shape(name, in_channels, time_conditional):
    torch.manual_seed(0)
    model = build_backbone(name, in_channels=in_channels, time_conditional=time_conditional)
    x = torch.randn(2, in_channels, 256, 64)
    t = torch.tensor([0.1, 0.9]) if time_conditional else None
    with torch.inference_mode():
        out = model.eval()(x, t)
    assert out.shape == (2, 2, 256, 64)
    assert torch.isfinite(out).all()


def test_time_argument_must_match_mode():
    x = torch.randn(1, 2, 32, 16)
    predictive = build_backbone("ncsnpp_tiny", in_channels=2, time_conditional=False)
    with pytest.raises(ValueError, match="not time-conditional"):
        predictive(x, torch.ones(1))
    score = build_backbone("ncsnpp_tiny", in_channels=2)
    with pytest.raises(ValueError, match="pass t"):
        score(x)
    with pytest.raises(ValueError, match="shape"):
        score(x, torch.ones(2))
    with pytest.raises(ValueError, match="multiples"):
        score(torch.randn(1, 2, 36, 16), torch.ones(1))
    with pytest.raises(ValueError, match="real"):
        score(torch.randn(1, 3, 32, 16), torch.ones(1))


def test_out_scale_scales_the_final_projection_input():
    torch.manual_seed(0)
    model = build_backbone("ncsnpp_tiny", in_channels=2, ch_mult=(1, 2), num_freqs=32).eval()
    _randomise_(model, seed=3)
    x, t = torch.randn(2, 2, 32, 16), torch.tensor([0.3, 0.8])
    with torch.inference_mode():
        plain = model(x, t)
        ones = model(x, t, out_scale=torch.ones(2))
        scaled = model(x, t, out_scale=torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(plain, ones)
    bias = model.output_proj.bias.detach()[None, :, None, None]  # (C,) -> (1, C, 1, 1)
    torch.testing.assert_close(scaled[0] - bias[0], 2.0 * (plain[0] - bias[0]))
    torch.testing.assert_close(scaled[1] - bias[0], 0.5 * (plain[1] - bias[0]))


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(0)
    model = build_backbone("ncsnpp_tiny", ch_mult=(1, 2), num_freqs=32, attn_resolutions=(16,))
    _randomise_(model, seed=4)
    model(torch.randn(2, 4, 32, 16), torch.tensor([0.2, 0.6])).square().mean().backward()
    for name, param in model.named_parameters():
        if name == "time_embed.fourier.frequencies":
            assert not param.requires_grad and param.grad is None
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "changes",
    [
        {"nf": 0},
        {"ch_mult": ()},
        {"ch_mult": (1, 0)},
        {"num_res_blocks": 0},
        {"num_freqs": 100},
        {"fir_kernel": (1, 2, 1)},
        {"dropout": 1.0},
        {"fourier_scale": 0.0},
        {"nf": 18},
        {"attn_resolutions": (-16,)},
        {"in_channels": 0},
        {"time_conditional": 1},
        {"ch_mult": 2},
        {"dropout": "0.1"},
    ],
)
def test_bad_config_raises_value_error(changes):
    with pytest.raises(ValueError, match="invalid NCSNppConfig"):
        NCSNppConfig(**changes)


def test_config_dict_round_trip_and_unknown_keys():
    config = PRESETS["ncsnpp_m"]
    assert NCSNppConfig.from_dict(config.to_dict()) == config
    assert NCSNppConfig(ch_mult=[1, 2]).ch_mult == (1, 2)  # lists (e.g. YAML) become tuples
    with pytest.raises(ValueError, match="unknown"):
        NCSNppConfig.from_dict({"nf": 32, "image_size": 256})
    with pytest.raises(ValueError, match="unknown"):
        build_backbone("ncsnpp_tiny", channels=3)
    with pytest.raises(ValueError, match="preset"):
        build_backbone("ncsnpp_xl")
    assert build_backbone({"nf": 16, "ch_mult": [1, 2], "num_freqs": 32}).config.nf == 16


# --------------------------------------------------------------------------------------------
# 4. FIR resampling against scipy


def _upfirdn_axis(x: np.ndarray, taps: np.ndarray, axis: int, up: bool) -> np.ndarray:
    """StyleGAN2 upfirdn (pad K/2 [- 1], factor 2) along one axis, via scipy.signal.upfirdn."""
    half = len(taps) // 2
    size = x.shape[axis]
    if up:  # zero-insert, convolve with 2 * taps / sum, keep samples K/2 - 1 ... K/2 - 2 + 2N
        full = signal.upfirdn(2.0 * taps / taps.sum(), x, up=2, axis=axis)
        return np.take(full, np.arange(half - 1, half - 1 + 2 * size), axis=axis)
    full = signal.upfirdn(taps / taps.sum(), x, axis=axis)  # full linear convolution
    return np.take(full, np.arange(half, half + size, 2), axis=axis)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1), (1, 2, 5, 3)])
def test_fir_resampling_matches_scipy_upfirdn(taps):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 8, 6, dtype=torch.float64, generator=gen)
    taps_np = np.asarray(taps, dtype=np.float64)

    up = fir_upsample_2d(x, fir_kernel_2d(taps, 4.0, torch.float64))
    expected_up = _upfirdn_axis(_upfirdn_axis(x.numpy(), taps_np, 2, True), taps_np, 3, True)
    assert up.shape == (2, 3, 16, 12)
    np.testing.assert_allclose(up.numpy(), expected_up, atol=1e-12)

    down = fir_downsample_2d(x, fir_kernel_2d(taps, 1.0, torch.float64))
    expected_down = _upfirdn_axis(_upfirdn_axis(x.numpy(), taps_np, 2, False), taps_np, 3, False)
    assert down.shape == (2, 3, 4, 3)
    np.testing.assert_allclose(down.numpy(), expected_down, atol=1e-12)


def test_fir_resampling_matches_reference_cpu_path():
    from sgmse.backbones.ncsnpp_utils import up_or_down_sampling as reference

    x = torch.randn(1, 2, 16, 8, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(
        fir_upsample_2d(x, fir_kernel_2d((1, 3, 3, 1), gain=4.0)),
        reference.upsample_2d(x, (1, 3, 3, 1), factor=2),
    )
    torch.testing.assert_close(
        fir_downsample_2d(x, fir_kernel_2d((1, 3, 3, 1), gain=1.0)),
        reference.downsample_2d(x, (1, 3, 3, 1), factor=2),
    )


# --------------------------------------------------------------------------------------------
# 5. The newer sgmse backbones (ncsnpp_v2, ncsnpp_48k) as configurations of the same network


def _compare_with_reference_variant(name: str, config: NCSNppConfig, frames: int):
    """sgmse's ``name`` backbone vs ours (converted weights) on the same input and times."""
    from sgmse.backbones.ncsnpp_48k import NCSNpp_48k
    from sgmse.backbones.ncsnpp_v2 import NCSNpp_v2

    kwargs = dict(
        nf=config.nf,
        ch_mult=config.ch_mult,
        num_res_blocks=config.num_res_blocks,
        attn_resolutions=config.attn_resolutions,
        image_size=config.num_freqs,
    )
    torch.manual_seed(0)
    reference = {"ncsnpp_v2": NCSNpp_v2, "ncsnpp_48k": NCSNpp_48k}[name](**kwargs).eval()
    _randomise_(reference, seed=1)
    ours = NCSNpp(config).eval()
    ours.load_state_dict(convert_reference_state_dict(reference.state_dict(), config), strict=True)
    gen = torch.Generator().manual_seed(2)
    shape = (2, 1, config.num_freqs, frames)
    x = torch.randn(shape, dtype=torch.complex64, generator=gen)
    y = torch.randn(shape, dtype=torch.complex64, generator=gen)
    t = torch.tensor([0.05, 0.7])
    with torch.inference_mode():
        if name == "ncsnpp_v2":  # x and y enter separately; no 1/t inside
            expected = reference(x, y, t)
            actual = ours(complex_to_channels(torch.cat([x, y], dim=1)), t)
        else:  # 1/t applied after the output projection
            expected = reference(torch.cat([x, y], dim=1), t)
            actual = ours(complex_to_channels(torch.cat([x, y], dim=1)), t, out_scale=1.0 / t)
    return complex_to_channels(expected), actual


@pytest.mark.parametrize("name", ["ncsnpp_v2", "ncsnpp_48k"])
def test_variant_matches_reference_with_small_width(name):
    config = NCSNppConfig.from_dict(
        {**PRESETS[name].to_dict(), "nf": 8, "ch_mult": [1, 2, 2], "attn_resolutions": [32]}
    )
    config = NCSNppConfig.from_dict({**config.to_dict(), "num_freqs": 64})
    _assert_close(*_compare_with_reference_variant(name, config, frames=32))


def test_48k_variant_matches_reference_at_768_bins():
    # The EARS layout: 768 bins (n_fft 1534), no pyramids, attention in the bottleneck only.
    config = NCSNppConfig.from_dict({**PRESETS["ncsnpp_48k"].to_dict(), "nf": 8})
    _assert_close(*_compare_with_reference_variant("ncsnpp_48k", config, frames=64))


@pytest.mark.parametrize("name", ["ncsnpp_v2", "ncsnpp_48k"])
def test_variant_parameter_count_matches_reference(name):
    from sgmse.backbones.ncsnpp_48k import NCSNpp_48k
    from sgmse.backbones.ncsnpp_v2 import NCSNpp_v2

    reference = {"ncsnpp_v2": NCSNpp_v2, "ncsnpp_48k": NCSNpp_48k}[name]()
    ours = _count(_meta_model(PRESETS[name]))
    print(f"{name}: ours {ours:,} reference {_count(reference):,}")
    assert ours == _count(reference)
    if name == "ncsnpp_v2":
        assert ours == 65_590_822  # the count the sgmse authors state
