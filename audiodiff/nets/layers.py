"""Building blocks of NCSN++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs").

These are the layers of the score network used by SGMSE+ (Richter et al. 2023): FIR resampling
(StyleGAN2-style, pure PyTorch), BigGAN-style residual blocks, spatial self-attention and the
Gaussian Fourier time embedding. Initialisation follows the DDPM scheme of the original code
(fan-average variance scaling, zero biases, near-zero init of the last layer of each residual
branch) so that freshly built networks start from the same function as the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.tensors import append_dims

# Scale used instead of an exact zero for "zero-initialised" layers, as in the original code.
NEAR_ZERO_INIT = 1e-10
SKIP_RESCALE = math.sqrt(2.0)


# --------------------------------------------------------------------------------------------
# Initialisation and small constructors


def ddpm_init_(weight: Tensor, scale: float = 1.0) -> Tensor:
    """In-place DDPM init: uniform with variance ``scale / fan_avg`` (a scale of 0 means 1e-10)."""
    scale = NEAR_ZERO_INIT if scale == 0 else scale
    receptive_field = weight[0, 0].numel() if weight.ndim > 2 else 1
    fan_out = weight.shape[0] * receptive_field
    fan_in = weight.shape[1] * receptive_field
    bound = math.sqrt(3.0 * scale / ((fan_in + fan_out) / 2.0))
    with torch.no_grad():
        return weight.uniform_(-bound, bound)


def conv2d(in_ch: int, out_ch: int, kernel_size: int, init_scale: float = 1.0) -> nn.Conv2d:
    """'Same'-padded convolution with DDPM initialisation and a zero bias."""
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2)
    ddpm_init_(conv.weight, init_scale)
    nn.init.zeros_(conv.bias)
    return conv


def linear(in_features: int, out_features: int, init_scale: float = 1.0) -> nn.Linear:
    """Fully connected layer with DDPM initialisation and a zero bias."""
    layer = nn.Linear(in_features, out_features)
    ddpm_init_(layer.weight, init_scale)
    nn.init.zeros_(layer.bias)
    return layer


class RowwiseLinear(nn.Linear):
    """nn.Linear whose result for a row never depends on the other rows of the batch.

    BLAS picks different kernels (gemv vs gemm) for different batch sizes, which changes the
    rounding; for the small (B, features) time-embedding path an explicit multiply-and-sum costs
    nothing and makes batch 1 and batch 8 give bit-identical outputs. Same weights as nn.Linear.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_features) -> (B, out_features)."""
        return (x[:, None, :] * self.weight).sum(dim=-1) + self.bias  # (B, out, in) -> (B, out)


def rowwise_linear(in_features: int, out_features: int) -> RowwiseLinear:
    """:class:`RowwiseLinear` with DDPM initialisation and a zero bias."""
    layer = RowwiseLinear(in_features, out_features)
    ddpm_init_(layer.weight, 1.0)
    nn.init.zeros_(layer.bias)
    return layer


def num_groups(channels: int) -> int:
    """GroupNorm group count used throughout NCSN++: a quarter of the channels, at most 32."""
    return min(channels // 4, 32)


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups(channels), channels, eps=1e-6)


# --------------------------------------------------------------------------------------------
# FIR resampling (upfirdn with a separable kernel, StyleGAN2 conventions)


def fir_kernel_2d(
    taps: Sequence[float], gain: float = 1.0, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Separable 2-D FIR kernel from 1-D ``taps``, normalised so that it sums to ``gain``."""
    taps_1d = torch.as_tensor(taps, dtype=torch.float64)
    if taps_1d.ndim != 1 or taps_1d.numel() < 2 or taps_1d.numel() % 2:
        raise ValueError(f"FIR taps must be a 1-D sequence of even length >= 2, got {taps}")
    kernel = torch.outer(taps_1d, taps_1d)  # (K,) x (K,) -> (K, K)
    return (kernel * (gain / kernel.sum())).to(dtype)


def fir_upsample_2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Zero-insertion 2x upsampling followed by FIR filtering: (B, C, H, W) -> (B, C, 2H, 2W).

    ``kernel`` is a (K, K) filter that sums to 4 (unit DC gain after zero insertion). Equivalent to
    StyleGAN2 ``upfirdn2d(x, kernel, up=2, pad=(K/2, K/2 - 1))``, done as a depthwise transposed
    convolution.
    """
    channels, taps = x.shape[1], kernel.shape[-1]
    weight = kernel.to(x.dtype).expand(channels, 1, taps, taps)  # (C, 1, K, K), one filter per ch
    return F.conv_transpose2d(x, weight, stride=2, padding=taps // 2 - 1, groups=channels)


def fir_downsample_2d(x: Tensor, kernel: Tensor) -> Tensor:
    """FIR filtering followed by 2x decimation: (B, C, H, W) -> (B, C, H/2, W/2).

    ``kernel`` is a (K, K) filter that sums to 1. Equivalent to StyleGAN2
    ``upfirdn2d(x, kernel, down=2, pad=(K/2 - 1, K/2 - 1))``, done as a depthwise strided
    convolution (``conv2d`` correlates, so the kernel is flipped to convolve).
    """
    channels, taps = x.shape[1], kernel.shape[-1]
    weight = kernel.flip(-2, -1).to(x.dtype).expand(channels, 1, taps, taps)  # (C, 1, K, K)
    return F.conv2d(x, weight, stride=2, padding=taps // 2 - 1, groups=channels)


class FIRUpsample(nn.Module):
    """Parameter-free 2x FIR upsampler (the kernel is a non-persistent buffer)."""

    def __init__(self, taps: Sequence[float]):
        super().__init__()
        self.register_buffer("kernel", fir_kernel_2d(taps, gain=4.0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return fir_upsample_2d(x, self.kernel)


class FIRDownsample(nn.Module):
    """Parameter-free 2x FIR downsampler (the kernel is a non-persistent buffer)."""

    def __init__(self, taps: Sequence[float]):
        super().__init__()
        self.register_buffer("kernel", fir_kernel_2d(taps, gain=1.0), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return fir_downsample_2d(x, self.kernel)


# --------------------------------------------------------------------------------------------
# Time embedding


class GaussianFourierEmbedding(nn.Module):
    """Random Fourier features ``[sin(2 pi s w), cos(2 pi s w)]`` with fixed ``w ~ N(0, scale^2)``.

    Song et al. (2021) embed the log noise level this way; SGMSE+ feeds log(t). The frequencies are
    a frozen parameter (``requires_grad=False``) so that they live in the state dict and parameter
    count exactly as in the reference implementation.
    """

    def __init__(self, num_frequencies: int, scale: float):
        super().__init__()
        self.frequencies = nn.Parameter(torch.randn(num_frequencies) * scale, requires_grad=False)

    def forward(self, s: Tensor) -> Tensor:
        """(B,) -> (B, 2 * num_frequencies)."""
        angles = torch.outer(s, self.frequencies) * (2 * math.pi)  # (B, num_frequencies)
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class TimeEmbedding(nn.Module):
    """log(t) -> Fourier features -> Linear -> swish -> Linear -> swish.

    The trailing swish is the one every residual block applies to the embedding before its own
    projection; applying it once here is mathematically identical and cheaper.
    """

    def __init__(self, nf: int, fourier_scale: float):
        super().__init__()
        self.fourier = GaussianFourierEmbedding(nf, fourier_scale)
        self.linear1 = rowwise_linear(2 * nf, 4 * nf)
        self.linear2 = rowwise_linear(4 * nf, 4 * nf)

    def forward(self, t: Tensor) -> Tensor:
        """(B,) diffusion times -> (B, 4 * nf) activated embedding."""
        emb = self.fourier(torch.log(t))
        emb = self.linear2(F.silu(self.linear1(emb)))
        return F.silu(emb)


# --------------------------------------------------------------------------------------------
# Residual and attention blocks


class ResnetBlockBigGAN(nn.Module):
    """BigGAN-style residual block of NCSN++ with optional FIR up/down-sampling inside the block.

    h = conv2(dropout(swish(norm2(conv1(resample(swish(norm1(x)))) + proj(temb)))))
    out = (skip(resample(x)) + h) / sqrt(2)
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        temb_dim: int | None,
        resample: str = "none",
        fir_kernel: Sequence[float] = (1, 3, 3, 1),
        dropout: float = 0.0,
    ):
        super().__init__()
        if resample not in ("none", "up", "down"):
            raise ValueError(f"resample must be 'none', 'up' or 'down', got {resample!r}")
        self.norm1 = group_norm(in_ch)
        self.resample: nn.Module | None = None
        if resample == "up":
            self.resample = FIRUpsample(fir_kernel)
        elif resample == "down":
            self.resample = FIRDownsample(fir_kernel)
        self.conv1 = conv2d(in_ch, out_ch, 3)
        self.time_proj = rowwise_linear(temb_dim, out_ch) if temb_dim is not None else None
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv2d(out_ch, out_ch, 3, init_scale=0.0)
        needs_skip_conv = in_ch != out_ch or resample != "none"
        self.skip = conv2d(in_ch, out_ch, 1) if needs_skip_conv else None

    def forward(self, x: Tensor, temb: Tensor | None = None) -> Tensor:
        """x: (B, in_ch, H, W), temb: (B, temb_dim) activated -> (B, out_ch, H', W')."""
        h = F.silu(self.norm1(x))
        if self.resample is not None:
            h = self.resample(h)
            x = self.resample(x)
        h = self.conv1(h)
        if self.time_proj is not None:
            if temb is None:
                raise ValueError("this block is time-conditional but no embedding was given")
            h = h + append_dims(self.time_proj(temb), h.ndim)  # (B, out_ch) -> (B, out_ch, 1, 1)
        h = F.silu(self.norm2(h))
        if self.dropout.p:  # a no-op module call costs a hop of a stream ~2 %
            h = self.dropout(h)
        h = self.conv2(h)
        if self.skip is not None:
            x = self.skip(x)
        return (x + h) / SKIP_RESCALE


class SelfAttention2d(nn.Module):
    """Single-head self-attention over all (H, W) positions, channels as features (DDPM/NCSN++)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.query = linear(channels, channels, init_scale=0.1)
        self.key = linear(channels, channels, init_scale=0.1)
        self.value = linear(channels, channels, init_scale=0.1)
        self.out = linear(channels, channels, init_scale=0.0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        batch, channels, height, width = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H*W, C)
        attended = F.scaled_dot_product_attention(  # softmax(q k^T / sqrt(C)) v: (B, H*W, C)
            self.query(tokens), self.key(tokens), self.value(tokens)
        )
        h = self.out(attended).transpose(1, 2)  # (B, H*W, C) -> (B, C, H*W)
        h = h.reshape(batch, channels, height, width)  # (B, C, H*W) -> (B, C, H, W)
        return (x + h) / SKIP_RESCALE


class OutputSkipHead(nn.Module):
    """Per-level output head of the progressive 'output_skip' pyramid: conv3x3(swish(norm(h)))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.norm = group_norm(in_ch)
        self.conv = conv2d(in_ch, out_ch, 3, init_scale=0.0)

    def forward(self, h: Tensor) -> Tensor:
        """(B, in_ch, H, W) -> (B, out_ch, H, W)."""
        return self.conv(F.silu(self.norm(h)))
