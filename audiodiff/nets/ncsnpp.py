"""NCSN++ score network (Song et al. 2021) in the SGMSE+ configuration (Richter et al. 2023).

A U-Net over complex spectrograms stacked as real channels (B, C, F, T): BigGAN-style residual
blocks with FIR resampling, self-attention at selected frequency resolutions and in the
bottleneck, an optional progressive input pyramid ('input_skip', summed in after every
downsampling) and an optional progressive output pyramid ('output_skip', summed across levels;
without it a single norm-swish-conv head closes the decoder), then a final 1x1 projection.

The three backbones of sgmse 0.1.2 are configurations of this one network (see ``PRESETS``):
``ncsnpp`` (both pyramids, output scale applied to the features entering the 1x1 projection),
``ncsnpp_v2`` (same layers; any output scale applies after the projection) and ``ncsnpp_48k``
(no pyramids, no attention outside the bottleneck, scale after the projection, 768 bins). All
three embed log t with Gaussian Fourier features and take [x, y] as interleaved real/imaginary
channels. Weight-compatible with them via ``convert_reference_state_dict``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.nets.causal import make_causal_
from audiodiff.nets.layers import (
    FIRDownsample,
    FIRUpsample,
    OutputSkipHead,
    ResnetBlockBigGAN,
    SelfAttention2d,
    TimeEmbedding,
    conv2d,
    num_groups,
)
from audiodiff.tensors import append_dims

_TUPLE_FIELDS = ("ch_mult", "attn_resolutions", "fir_kernel")
OUT_SCALE_AT = ("features", "output")  # where NCSNpp.forward applies its out_scale
MAX_LOOKAHEAD = 2  # frames a causal NCSN++ may look ahead


@dataclass(frozen=True)
class NCSNppConfig:
    """Hyper-parameters of NCSN++; the defaults are the SGMSE+ network (~65.6 M parameters)."""

    nf: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    in_channels: int = 4  # real/imag of each complex input spectrogram
    out_channels: int = 2  # real/imag of the complex output
    time_conditional: bool = True  # False for the StoRM predictive net (no time input at all)
    num_freqs: int = 256  # frequency bins the resolutions are counted from (reference image_size)
    fourier_scale: float = 16.0
    fir_kernel: tuple[int, ...] = (1, 3, 3, 1)
    dropout: float = 0.0
    input_skip: bool = True  # progressive input pyramid (reference progressive_input)
    output_skip: bool = True  # progressive output pyramid (reference progressive)
    out_scale_at: str = "features"  # "features": before the final 1x1 projection; "output": after
    causal: bool = False  # time-causal variant (nets/causal.py): no attention, F-only resampling
    lookahead: int = 0  # causal only: output frame t sees input frames up to t + lookahead

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:  # accept lists (e.g. from YAML) but store tuples
            value = getattr(self, name)
            _check(isinstance(value, (list, tuple)), f"{name} must be a sequence, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        _validate(self)

    @property
    def num_levels(self) -> int:
        return len(self.ch_mult)

    @property
    def downsampling_factor(self) -> int:
        """F and T must be multiples of this."""
        return 2 ** (self.num_levels - 1)

    @property
    def time_multiple(self) -> int:
        """T must be a multiple of this (1 for the causal variant: time is never resampled)."""
        return 1 if self.causal else self.downsampling_factor

    def level_has_attention(self, level: int) -> bool:
        """Attention is placed by the frequency size of a level: num_freqs / 2**level."""
        return self.num_freqs // 2**level in self.attn_resolutions

    def to_dict(self) -> dict[str, Any]:
        """Plain, YAML/JSON-friendly dict (tuples become lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NCSNppConfig:
        """Inverse of ``to_dict``; unknown keys are an error."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown NCSNppConfig keys {unknown}; valid keys are {sorted(known)}")
        return cls(**dict(data))


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"invalid NCSNppConfig: {message}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _validate(cfg: NCSNppConfig) -> None:
    """Reject configurations that cannot be built or cannot run."""
    for name in ("nf", "num_res_blocks", "in_channels", "out_channels", "num_freqs"):
        value = getattr(cfg, name)
        _check(_is_int(value) and value >= 1, f"{name} must be a positive int, got {value!r}")
    _check(len(cfg.ch_mult) >= 1, "ch_mult must not be empty")
    _check(all(_is_int(m) and m >= 1 for m in cfg.ch_mult), f"bad ch_mult {cfg.ch_mult}")
    _check(
        all(_is_int(r) and r >= 1 for r in cfg.attn_resolutions),
        f"attn_resolutions must be positive ints, got {cfg.attn_resolutions}",
    )
    _check(
        cfg.num_freqs % cfg.downsampling_factor == 0,
        f"num_freqs={cfg.num_freqs} is not divisible by 2**(len(ch_mult)-1)",
    )
    for name in ("time_conditional", "input_skip", "output_skip", "causal"):
        _check(isinstance(getattr(cfg, name), bool), f"{name} must be a bool")
    _check(
        _is_int(cfg.lookahead) and 0 <= cfg.lookahead <= (MAX_LOOKAHEAD if cfg.causal else 0),
        f"lookahead must be an int in [0, {MAX_LOOKAHEAD}] for a causal network and 0 otherwise, "
        f"got {cfg.lookahead!r}",
    )
    _check(
        not (cfg.causal and cfg.attn_resolutions),
        "a causal network has no attention: attn_resolutions must be empty",
    )
    _check(cfg.out_scale_at in OUT_SCALE_AT, f"out_scale_at must be one of {OUT_SCALE_AT}")
    _check(
        _is_real(cfg.fourier_scale) and cfg.fourier_scale > 0,
        f"fourier_scale must be > 0, got {cfg.fourier_scale!r}",
    )
    _check(
        _is_real(cfg.dropout) and 0.0 <= cfg.dropout < 1.0,
        f"dropout must be in [0, 1), got {cfg.dropout!r}",
    )
    _check(
        len(cfg.fir_kernel) >= 2 and len(cfg.fir_kernel) % 2 == 0,
        f"fir_kernel must have an even number (>= 2) of taps, got {cfg.fir_kernel}",
    )
    _check(all(_is_real(tap) for tap in cfg.fir_kernel), f"bad fir_kernel {cfg.fir_kernel}")
    _check(sum(cfg.fir_kernel) > 0, f"fir_kernel taps must have a positive sum: {cfg.fir_kernel}")
    for channels in _normalised_channel_counts(cfg):
        groups = num_groups(channels)
        _check(
            groups >= 1 and channels % groups == 0,
            f"GroupNorm cannot split {channels} channels into min(C // 4, 32) = {groups} "
            "groups; choose nf / ch_mult so that every width is a multiple of its group count",
        )


def _normalised_channel_counts(cfg: NCSNppConfig) -> set[int]:
    """Every channel count that enters a GroupNorm (including concatenated skip inputs)."""
    widths = [cfg.nf * m for m in cfg.ch_mult]
    counts = set(widths)
    skips = _skip_channels(cfg)
    in_ch = widths[-1]
    for level in reversed(range(cfg.num_levels)):
        for _ in range(cfg.num_res_blocks + 1):
            counts.add(in_ch + skips.pop())
            in_ch = widths[level]
    return counts


def _skip_channels(cfg: NCSNppConfig) -> list[int]:
    """Channel counts of the encoder activations stored for the decoder, in push order."""
    widths = [cfg.nf * m for m in cfg.ch_mult]
    skips = [cfg.nf]
    for level, width in enumerate(widths):
        skips += [width] * cfg.num_res_blocks
        if level != cfg.num_levels - 1:
            skips.append(width)
    return skips


PRESETS: dict[str, NCSNppConfig] = {
    # SGMSE+ (Richter et al. 2023): the score SDE NCSN++ at 256 frequency bins.
    "ncsnpp": NCSNppConfig(),
    # sgmse's ncsnpp_v2 ("Investigating training objectives", Richter et al. 2024): the same
    # layers; the wrapper's network scaling (if any) divides the projected output.
    "ncsnpp_v2": NCSNppConfig(out_scale_at="output"),
    # sgmse's ncsnpp_48k (EARS, Richter et al. 2024): no pyramids, attention only in the
    # bottleneck, 1/t after the output projection, 768 bins (n_fft 1534).
    "ncsnpp_48k": NCSNppConfig(
        attn_resolutions=(),
        input_skip=False,
        output_skip=False,
        out_scale_at="output",
        num_freqs=768,
    ),
    # StoRM's "NCSN++M" (Lemercier et al. 2023): 4 levels, 1 block per level, attention only in
    # the bottleneck (the smallest level has 32 bins, so no level matches a 16-bin resolution).
    "ncsnpp_m": NCSNppConfig(ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=()),
    "ncsnpp_s": NCSNppConfig(nf=64, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=()),
    "ncsnpp_tiny": NCSNppConfig(nf=32, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=()),
    # The time-causal variant (nets/causal.py) for one-thread real-time streaming, 1 frame of
    # look-ahead. Frequency-only resampling keeps every frame at every level, and a streamed hop
    # of a few frames pays a fixed cost per layer, so it is narrow (nf 8, 16.5 M multiply-adds
    # per frame against ncsnpp_tiny's 99 M made causal) and has no input/output pyramids.
    "ncsnpp_causal": NCSNppConfig(
        nf=8,
        ch_mult=(1, 2, 4),
        num_res_blocks=1,
        attn_resolutions=(),
        input_skip=False,
        output_skip=False,
        causal=True,
        lookahead=1,
    ),
}


class DownLevel(nn.Module):
    """One encoder resolution: residual blocks (+ attention), then a downsampling residual block
    with the progressive input pyramid (if configured) summed in through a 1x1 conv."""

    def __init__(self, cfg: NCSNppConfig, level: int, in_ch: int, temb_dim: int | None):
        super().__init__()
        width = cfg.nf * cfg.ch_mult[level]
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleList()
        for index in range(cfg.num_res_blocks):
            self.blocks.append(_block(cfg, in_ch if index == 0 else width, width, temb_dim))
            if cfg.level_has_attention(level):
                self.attn.append(SelfAttention2d(width))
        self.downsample: ResnetBlockBigGAN | None = None
        self.input_skip: nn.Conv2d | None = None
        self.pyramid_down: FIRDownsample | None = None
        if level != cfg.num_levels - 1:
            self.downsample = _block(cfg, width, width, temb_dim, resample="down")
            if cfg.input_skip:
                self.input_skip = conv2d(cfg.in_channels, width, 1)
                self.pyramid_down = FIRDownsample(cfg.fir_kernel)

    def forward(
        self, h: Tensor, pyramid: Tensor, temb: Tensor | None, skips: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Run the level, pushing each activation for the decoder onto ``skips``."""
        for index, block in enumerate(self.blocks):
            h = block(h, temb)
            if len(self.attn):
                h = self.attn[index](h)
            skips.append(h)
        if self.downsample is not None:
            h = self.downsample(h, temb)
            if self.input_skip is not None:
                pyramid = self.pyramid_down(pyramid)  # (B, C_in, H, W) -> (B, C_in, H/2, W/2)
                h = h + self.input_skip(pyramid)
            skips.append(h)
        return h, pyramid


class MidBlock(nn.Module):
    """Bottleneck: residual block, self-attention (none in the causal variant), residual block."""

    def __init__(self, cfg: NCSNppConfig, channels: int, temb_dim: int | None):
        super().__init__()
        self.block1 = _block(cfg, channels, channels, temb_dim)
        self.attn = None if cfg.causal else SelfAttention2d(channels)
        self.block2 = _block(cfg, channels, channels, temb_dim)

    def forward(self, h: Tensor, temb: Tensor | None) -> Tensor:
        h = self.block1(h, temb)
        return self.block2(h if self.attn is None else self.attn(h), temb)


class UpLevel(nn.Module):
    """One decoder resolution: residual blocks over [h, skip] concatenations (+ attention), the
    output-pyramid head (if configured), then an upsampling residual block."""

    def __init__(
        self, cfg: NCSNppConfig, level: int, in_ch: int, skip_chs: list[int], temb_dim: int | None
    ):
        super().__init__()
        width = cfg.nf * cfg.ch_mult[level]
        self.blocks = nn.ModuleList()
        for skip_ch in skip_chs:
            self.blocks.append(_block(cfg, in_ch + skip_ch, width, temb_dim))
            in_ch = width
        self.attn = SelfAttention2d(width) if cfg.level_has_attention(level) else None
        self.output_skip = OutputSkipHead(width, cfg.in_channels) if cfg.output_skip else None
        self.upsample: ResnetBlockBigGAN | None = None
        self.pyramid_up: FIRUpsample | None = None
        if level != 0:
            self.upsample = _block(cfg, width, width, temb_dim, resample="up")
        if level != cfg.num_levels - 1 and cfg.output_skip:
            self.pyramid_up = FIRUpsample(cfg.fir_kernel)

    def forward(
        self, h: Tensor, pyramid: Tensor | None, temb: Tensor | None, skips: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Run the level, popping encoder activations from ``skips``."""
        for block in self.blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)  # concat along channels
        if self.attn is not None:
            h = self.attn(h)
        if self.output_skip is not None:
            head = self.output_skip(h)
            if self.pyramid_up is None:  # coarsest level starts the pyramid
                pyramid = head
            else:  # (B, C_in, H/2, W/2) -> (B, C_in, H, W)
                pyramid = self.pyramid_up(pyramid) + head
        if self.upsample is not None:
            h = self.upsample(h, temb)
        return h, pyramid


def _block(
    cfg: NCSNppConfig, in_ch: int, out_ch: int, temb_dim: int | None, resample: str = "none"
) -> ResnetBlockBigGAN:
    return ResnetBlockBigGAN(
        in_ch, out_ch, temb_dim, resample=resample, fir_kernel=cfg.fir_kernel, dropout=cfg.dropout
    )


class NCSNpp(nn.Module):
    """NCSN++ U-Net (Song et al. 2021) as configured for SGMSE+ (Richter et al. 2023).

    ``down[i]`` / ``up[i]`` are the encoder / decoder stages at resolution level ``i`` (level 0 is
    full resolution); the decoder runs ``up[L-1]`` ... ``up[0]``.
    """

    def __init__(self, config: NCSNppConfig):
        super().__init__()
        self.config = cfg = config
        temb_dim = 4 * cfg.nf if cfg.time_conditional else None
        self.time_embed = TimeEmbedding(cfg.nf, cfg.fourier_scale) if temb_dim is not None else None
        self.input_conv = conv2d(cfg.in_channels, cfg.nf, 3)

        in_ch = cfg.nf
        self.down = nn.ModuleList()
        for level in range(cfg.num_levels):
            self.down.append(DownLevel(cfg, level, in_ch, temb_dim))
            in_ch = cfg.nf * cfg.ch_mult[level]
        self.mid = MidBlock(cfg, in_ch, temb_dim)

        skips = _skip_channels(cfg)
        up_levels: list[UpLevel] = []
        for level in reversed(range(cfg.num_levels)):
            level_skips = [skips.pop() for _ in range(cfg.num_res_blocks + 1)]
            up_levels.append(UpLevel(cfg, level, in_ch, level_skips, temb_dim))
            in_ch = cfg.nf * cfg.ch_mult[level]
        self.up = nn.ModuleList(reversed(up_levels))  # index by level, like ``down``
        # Without the output pyramid, one norm-swish-conv head maps the decoder to C_in channels.
        self.output_head = None if cfg.output_skip else OutputSkipHead(in_ch, cfg.in_channels)

        # PyTorch default init, as the reference's plain nn.Conv2d output layer.
        self.output_proj = nn.Conv2d(cfg.in_channels, cfg.out_channels, 1)
        if cfg.causal:
            make_causal_(self, cfg.fir_kernel)

    def forward(
        self, x: Tensor, t: Tensor | None = None, out_scale: Tensor | None = None
    ) -> Tensor:
        """x: (B, in_channels, F, T) real, F and T divisible by 2**(len(ch_mult)-1);
        t: (B,) diffusion time (embedded as Fourier features of log t), None iff not
        time_conditional; out_scale: (B,) or None - multiplies the features entering the final
        1x1 projection (``out_scale_at="features"``, where sgmse's ncsnpp applies its 1/t) or the
        projected output (``"output"``, as ncsnpp_48k and ncsnpp_v2); None means 1.
        Returns (B, out_channels, F, T) real. The causal variant takes any T; its output frame t
        sees input frames up to t + lookahead (zeros past the end)."""
        self._check_inputs(x, t, out_scale)
        lookahead = self.config.lookahead
        if lookahead:  # (B, C, F, T) -> (B, C, F, T + L) -> output frames L .. T + L - 1
            return self.causal_forward(F.pad(x, (0, lookahead)), t, out_scale)[..., lookahead:]
        return self.causal_forward(x, t, out_scale)

    def causal_forward(
        self, x: Tensor, t: Tensor | None = None, out_scale: Tensor | None = None
    ) -> Tensor:
        """The network without the look-ahead delay (the same as ``forward`` when L = 0):
        output frame t of the causal variant sees input frames up to t (nets/causal.py)."""
        temb = self.time_embed(t) if self.time_embed is not None else None

        h = self.input_conv(x)
        skips = [h]
        pyramid = x
        for stage in self.down:
            h, pyramid = stage(h, pyramid, temb, skips)
        h = self.mid(h, temb)

        out: Tensor | None = None
        for stage in reversed(self.up):
            h, out = stage(h, out, temb, skips)
        if self.output_head is not None:
            out = self.output_head(h)
        scale = None if out_scale is None else append_dims(out_scale.to(out.dtype), out.ndim)
        if scale is not None and self.config.out_scale_at == "features":
            out = out * scale  # (B,) -> (B, 1, 1, 1)
        out = self.output_proj(out)
        if scale is not None and self.config.out_scale_at == "output":
            out = out * scale
        return out

    def _check_inputs(self, x: Tensor, t: Tensor | None, out_scale: Tensor | None) -> None:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels or x.is_complex():
            raise ValueError(
                f"x must be real (B, {cfg.in_channels}, F, T), got {tuple(x.shape)} {x.dtype}"
            )
        factor = cfg.downsampling_factor
        if x.shape[-2] % factor or x.shape[-1] % cfg.time_multiple:
            what = "F" if cfg.causal else "F and T"  # the causal variant never resamples time
            raise ValueError(f"{what} must be multiples of {factor}, got {tuple(x.shape[-2:])}")
        batch = x.shape[0]
        if cfg.time_conditional and t is None:
            raise ValueError("this NCSN++ is time-conditional: pass t of shape (B,)")
        if not cfg.time_conditional and t is not None:
            raise ValueError("this NCSN++ is not time-conditional: t must be None")
        for name, value in (("t", t), ("out_scale", out_scale)):
            if value is not None and tuple(value.shape) != (batch,):
                raise ValueError(f"{name} must have shape ({batch},), got {tuple(value.shape)}")


def build_backbone(spec: str | NCSNppConfig | Mapping[str, Any], **overrides: Any) -> NCSNpp:
    """Build an NCSN++ from a preset name, a config or a config dict, with field overrides."""
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown NCSN++ preset {spec!r}; choose from {sorted(PRESETS)}")
        base = PRESETS[spec].to_dict()
    elif isinstance(spec, NCSNppConfig):
        base = spec.to_dict()
    elif isinstance(spec, Mapping):
        base = NCSNppConfig.from_dict(spec).to_dict()
    else:
        raise TypeError(f"spec must be a preset name, NCSNppConfig or dict, got {type(spec)}")
    return NCSNpp(NCSNppConfig.from_dict({**base, **overrides}))
