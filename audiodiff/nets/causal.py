"""The time-causal NCSN++ variant and its frame-by-frame streaming with cached state.

``NCSNppConfig(causal=True, lookahead=L)`` builds the ordinary NCSN++ and then swaps, in place
(:func:`make_causal_`), the layers that look along time:

- every k x k convolution becomes a :class:`CausalConv2d`: 'same' padding along frequency,
  k - 1 frames of left padding along time, so output frame t sees input frames t - k + 1 ... t;
- every GroupNorm becomes a :class:`FrameGroupNorm`: statistics over (channels of a group x
  frequency) of each frame alone, never over time;
- the FIR resamplers of the residual blocks and of the input/output pyramids resample along
  frequency only (:class:`FreqFIRDownsample`, :class:`FreqFIRUpsample`), so every level keeps
  every frame;
- the configuration refuses attention (``attn_resolutions`` empty, none in the bottleneck).

Parameter names and shapes stay those of the non-causal network, so a trained NCSN++ can
warm-start the causal one. The whole network is then causal; the look-ahead of L frames is a
delay (:meth:`NCSNpp.forward` appends L zero frames and drops the first L outputs), so output
frame t sees input frames up to t + L.

Streaming (:class:`CausalStream`): each :class:`CausalConv2d` keeps the last k - 1 input frames
of the stream in a :class:`StreamCache`; all other layers act frame by frame. Pushing a stream
in chunks of any size then gives the offline causal forward of the whole stream, with each
chunk computing only its new frames. The cache is passed through a thread-local, so one network
may serve many streams in different threads. While a stream is pushed the layers work on
(B, C, T, F) tensors, time before frequency: on the few frames of a hop, CPU convolution runs
2-3 times faster in that layout than in the offline (B, C, F, T) one (docs/streaming-causal.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audiodiff.nets.layers import FIRDownsample, FIRUpsample

_ACTIVE = threading.local()  # .cache: the StreamCache of the stream being pushed, or None
_NATIVE_LOCK = threading.Lock()  # guards the two below
_native_users = 0  # pushes running with oneDNN convolutions switched off
_onednn_before = True  # torch.backends.mkldnn.enabled before the first of them


# --------------------------------------------------------------------------------------------
# Layers


class StreamCache:
    """The past input frames each :class:`CausalConv2d` of one stream needs, keyed by layer."""

    def __init__(self) -> None:
        self.frames: dict[int, Tensor] = {}  # id(layer) -> (B, C, F, k - 1)

    @contextmanager
    def active(self) -> Iterator[StreamCache]:
        """Make this the cache that causal layers read and update in this thread."""
        previous = getattr(_ACTIVE, "cache", None)
        _ACTIVE.cache = self
        try:
            yield self
        finally:
            _ACTIVE.cache = previous


class CausalConv2d(nn.Conv2d):
    """Convolution over (F, T), 'same' along frequency and causal along time.

    Offline, k_T - 1 zero frames pad the left; while a :class:`StreamCache` is active they are
    the stream's previous input frames instead. Same parameters as the ``nn.Conv2d`` it replaces.
    (B, C_in, F, T) -> (B, C_out, F, T).
    """

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> CausalConv2d:
        """A causal twin of ``conv`` that shares its weight and bias tensors."""
        kernel_f, kernel_t = conv.kernel_size
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size, device="meta")
        layer.padding = (kernel_f // 2, 0)
        layer.weight, layer.bias = conv.weight, conv.bias
        return layer

    def forward(self, x: Tensor) -> Tensor:
        past_frames = self.kernel_size[1] - 1
        cache = getattr(_ACTIVE, "cache", None)
        if cache is None:  # offline: (B, C, F, T), zeros before the first frame
            x = F.pad(x, (past_frames, 0))  # (B, C, F, T + k - 1)
            return F.conv2d(x, self.weight, self.bias, padding=self.padding)
        # streaming: (B, C, T, F), the stream's previous frames before the first one
        if past_frames:
            past = cache.frames.get(id(self))
            if past is None:  # stream start: the same zeros as the offline padding
                past = x.new_zeros(x.shape[0], x.shape[1], past_frames, x.shape[3])
            x = torch.cat([past, x], dim=2)  # (B, C, k - 1 + T, F)
            cache.frames[id(self)] = x[:, :, -past_frames:]
        return F.conv2d(x, self._swapped_weight(), self.bias, padding=self.padding[::-1])

    def _swapped_weight(self) -> Tensor:
        """The weight for the (T, F) layout, (C_out, C_in, k_T, k_F), contiguous (about 20 %
        faster than a transposed view); rebuilt whenever the weight has changed."""
        weight = self.weight
        if weight.requires_grad and torch.is_grad_enabled():
            return weight.transpose(2, 3)  # a stream under autograd: keep the graph
        cached = self.__dict__.get("_swapped")  # (source tensor, its version, swapped copy)
        if cached is None or cached[0] is not weight or cached[1] != weight._version:
            cached = (weight, weight._version, weight.detach().transpose(2, 3).contiguous())
            self.__dict__["_swapped"] = cached
        return cached[2]


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics cover (channels of a group x frequency) of ONE frame.

    y[b, c, f, t] = (x - mean_{g(c), t}) / sqrt(var_{g(c), t} + eps) · γ_c + β_c, the statistics
    over the group's channels and all frequencies of frame t. (B, C, F, T) -> (B, C, F, T).
    """

    @classmethod
    def from_norm(cls, norm: nn.GroupNorm) -> FrameGroupNorm:
        layer = cls(norm.num_groups, norm.num_channels, norm.eps, device="meta")
        layer.weight, layer.bias = norm.weight, norm.bias
        return layer

    def forward(self, x: Tensor) -> Tensor:
        if _streaming():  # (B, C, T, F)
            batch, channels, frames, freqs = x.shape
            per_frame = x.transpose(1, 2).reshape(batch * frames, channels, freqs)  # (BT, C, F)
            y = F.group_norm(per_frame, self.num_groups, self.weight, self.bias, self.eps)
            return y.reshape(batch, frames, channels, freqs).transpose(1, 2)  # (B, C, T, F)
        batch, channels, freqs, frames = x.shape
        per_frame = x.permute(0, 3, 1, 2).reshape(batch * frames, channels, freqs)  # (BT, C, F)
        y = F.group_norm(per_frame, self.num_groups, self.weight, self.bias, self.eps)
        return y.reshape(batch, frames, channels, freqs).permute(0, 2, 3, 1)  # (B, C, F, T)


def _fir_taps(taps: Sequence[float], gain: float) -> list[float]:
    """1-D FIR taps summing to ``gain``, as Python floats (the resamplers use them as scalars)."""
    total = float(sum(taps))
    return [float(tap) * gain / total for tap in taps]


def _streaming() -> bool:
    """Whether a stream is being pushed in this thread: its tensors are (B, C, T, F)."""
    return getattr(_ACTIVE, "cache", None) is not None


def _freq_dim() -> int:
    """The frequency axis of the layers' tensors: (B, C, F, T) offline, (B, C, T, F) streaming."""
    return 3 if _streaming() else 2


def _freq_slice(x: Tensor, dim: int, start: int, stop: int, step: int = 1) -> Tensor:
    """x[start:stop:step] along axis ``dim``."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, stop, step)
    return x[tuple(index)]


def _freq_pad(x: Tensor, dim: int, before: int, after: int) -> Tensor:
    """Zeros before and after along axis ``dim`` (2 or 3 of a 4-D tensor)."""
    return F.pad(x, (before, after) if dim == 3 else (0, 0, before, after))


def _shifted(x: Tensor, dim: int, shift: int, pad: int) -> Tensor:
    """x[f - shift] along frequency axis ``dim`` with zeros outside; ``x`` is padded by ``pad``."""
    freqs = x.shape[dim] - 2 * pad
    return _freq_slice(x, dim, pad - shift, pad - shift + freqs)


class FreqFIRDownsample(nn.Module):
    """FIR filter and 2x decimation along frequency only: (B, C, F, T) -> (B, C, F/2, T).

    StyleGAN2 ``upfirdn`` with ``down=2`` and padding K/2 - 1 on each side, along F:
    y[m] = sum_k h[K - 1 - k] x[2m + k - K/2 + 1]; done as K strided slices (small hops of a
    stream pay per call, and a depthwise strided convolution is far slower here).
    """

    def __init__(self, taps: Sequence[float]):
        super().__init__()
        self.taps = _fir_taps(taps, 1.0)[::-1]  # flipped: a convolution, as fir_downsample_2d

    def forward(self, x: Tensor) -> Tensor:
        dim, pad = _freq_dim(), len(self.taps) // 2 - 1
        padded = _freq_pad(x, dim, pad, pad)  # F + K - 2 bins
        half = x.shape[dim] // 2
        out = _freq_slice(padded, dim, 0, 2 * half, 2) * self.taps[0]
        for k, tap in enumerate(self.taps[1:], start=1):
            out = out + _freq_slice(padded, dim, k, k + 2 * half, 2) * tap  # F/2 bins
        return out


class FreqFIRUpsample(nn.Module):
    """Zero insertion and FIR filter along frequency only: (B, C, F, T) -> (B, C, 2F, T).

    StyleGAN2 ``upfirdn`` with ``up=2``, taps summing to 2 and padding (K/2, K/2 - 1), along F, in
    polyphase form: y[2m + r] = sum_d h[2d + r + K/2 - 1] x[m - d] for r = 0, 1.
    """

    def __init__(self, taps: Sequence[float]):
        super().__init__()
        self.taps = _fir_taps(taps, 2.0)

    def forward(self, x: Tensor) -> Tensor:
        dim = _freq_dim()
        size, offset = len(self.taps), len(self.taps) // 2 - 1
        padded = _freq_pad(x, dim, size, size)  # room for every shift
        phases = []
        for r in (0, 1):
            terms = [
                _shifted(padded, dim, d, size) * self.taps[2 * d + r + offset]
                for d in range(-size, size + 1)
                if 0 <= 2 * d + r + offset < size
            ]
            phases.append(sum(terms[1:], terms[0]))  # the shape of x
        out = torch.stack(phases, dim=dim + 1)  # phase r of output bin 2m + r after bin m
        shape = list(x.shape)
        shape[dim] *= 2
        return out.reshape(shape)  # (B, C, 2F, T), or (B, C, T, 2F) streaming


def make_causal_(net: nn.Module, fir_kernel: Sequence[float]) -> nn.Module:
    """Swap, in place, every time-looking layer of ``net`` for its causal twin (module doc)."""
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d) and child.kernel_size[1] > 1:
                setattr(parent, name, CausalConv2d.from_conv(child))
            elif isinstance(child, nn.GroupNorm):
                setattr(parent, name, FrameGroupNorm.from_norm(child))
            elif isinstance(child, FIRDownsample):
                setattr(parent, name, FreqFIRDownsample(fir_kernel))
            elif isinstance(child, FIRUpsample):
                setattr(parent, name, FreqFIRUpsample(fir_kernel))
    return net


# --------------------------------------------------------------------------------------------
# Streaming


@contextmanager
def native_convolutions() -> Iterator[None]:
    """Run CPU convolutions on PyTorch's own kernels instead of oneDNN's while inside.

    On the few frames of a hop, oneDNN picks slow kernels for the decoder's wide-input layers;
    the native ones made a whole streamed hop about 12 % cheaper here (docs/streaming-causal.md).
    The switch is process-wide, so concurrent pushes share it: the first one in turns oneDNN off,
    the last one out restores the setting (other threads' convolutions run natively meanwhile,
    with the same results up to float rounding).
    """
    global _native_users, _onednn_before
    with _NATIVE_LOCK:
        if _native_users == 0:
            _onednn_before = torch.backends.mkldnn.enabled
            torch.backends.mkldnn.enabled = False
        _native_users += 1
    try:
        yield
    finally:
        with _NATIVE_LOCK:
            _native_users -= 1
            if _native_users == 0:
                torch.backends.mkldnn.enabled = _onednn_before


class CausalStream:
    """Frame-by-frame streaming of a causal NCSN++ with cached layer state.

    >>> stream = CausalStream(net)     # net.config.causal
    >>> out = stream.push(x_chunk)     # (B, C, F, n) -> (B, C_out, F, m): output frames ready
    >>> tail = stream.flush()          # the last L frames (look-ahead as zeros), then reset

    Output frame t needs input frames up to t + L, so the first L pushed frames yield no output
    yet; over a whole stream the concatenated outputs equal ``net(x)`` (one offline call) up to
    rounding. ``net_kwargs`` (e.g. ``t``) are passed to every call.
    """

    def __init__(self, net: nn.Module, **net_kwargs):
        config = getattr(net, "config", None)
        if not getattr(config, "causal", False):
            raise ValueError("CausalStream needs a causal NCSN++ (config.causal = True)")
        self.net, self.lookahead, self.net_kwargs = net, config.lookahead, net_kwargs
        self.reset()

    def reset(self) -> None:
        self.cache, self._skip, self._shape = StreamCache(), self.lookahead, None

    def push(self, x: Tensor) -> Tensor:
        """(B, C, F, n) new input frames -> (B, C_out, F, m) new output frames (m <= n)."""
        if not x.shape[-1]:  # nothing new (e.g. flush with L = 0 or before any input)
            return x.new_zeros(x.shape[0], self.net.config.out_channels, x.shape[2], 0)
        self._shape = x.shape[:-1]
        with self.cache.active(), native_convolutions():  # layers in (B, C, T, F) (module doc)
            out = self.net.causal_forward(x.transpose(2, 3), **self.net_kwargs).transpose(2, 3)
        skip = min(self._skip, out.shape[-1])  # frames before the start of the stream
        self._skip -= skip
        return out[..., skip:]

    def flush(self) -> Tensor:
        """End of stream: the last L output frames, with zeros as their look-ahead; resets.
        (B, C_out, F, L); nothing pushed: (0, C_out, 0, 0)."""
        batch, _, freqs = self._shape if self._shape is not None else (0, 0, 0)
        zeros = self.net.output_proj.weight.new_zeros(batch, self.net.config.in_channels, freqs, 0)
        out = self.push(zeros.new_zeros(*zeros.shape[:-1], self.lookahead))
        self.reset()
        return out
