"""Block-online (real-time) enhancement: a stream of samples in, enhanced samples out.

:class:`RealtimeEnhancer` feeds the stream through the streaming STFT
(:mod:`audiodiff.spec_streaming`) and processes it hop by hop; a hop is one *block* of
``block_frames`` STFT frames. NCSN++ is a non-causal U-Net over frequency x time, so each hop runs
the network on a fixed-size *window*::

    [ look-back context | (diffusion: older buffered blocks) | new block | look-ahead ]

padded (with zeros on the left, at the stream's start) to ``window_frames``, a multiple of the
backbone's ``2**(levels - 1)``; only the block's frames are kept and go to the synthesiser.

Modes. ``predictive``: one predictor pass per hop (StoRM's Ŷ); a *causal* predictor
(:mod:`audiodiff.nets.causal`) streams with cached layer state instead of a window: each hop runs
it on the hop's new frames only, its look-ahead is its own L frames, and the output equals the
offline enhancement (at a fixed gain). ``storm``: the model's reverse sampler with ``steps`` steps
on the window (StoRM models only, as offline). ``score``: SGMSE+ from y. ``diffusion``: a
streaming diffusion buffer (see :class:`_DiffusionBuffer`): N = ``steps`` blocks sit at
staggered diffusion times and every hop costs ONE score-network call per predictor and
corrector step (plus one predictor call for StoRM), with one diffusion time per frame
(:func:`frame_score`); it runs the PC sampler (``corrector_steps`` Langevin steps with ``snr``,
then the reverse-diffusion step, which is also the Euler-Maruyama step here) and refuses the
ODE samplers.
Caveat: our models are trained with one t per example, never on windows mixing noise levels, so
this mode's quality with trained networks is unmeasured; its bookkeeping is exact (tests).
``passthrough``: the STFT round trip only (tests, plumbing).

Latency. With B = ``block_frames``, A = ``lookahead_frames``, hop h, the output is the input
delayed by exactly ``latency_samples = n_fft - 1 + (B - 1 + A)·h`` (+ ``(N - 1)·B·h`` in diffusion
mode, the N - 1 extra hops a block waits in the buffer). Derivation: sample n lies (after the
STFT's own n_fft - 1 bound, see :mod:`audiodiff.spec_streaming`) in frame t; the worst case is t
the first frame of its block, which is emitted once the block's last frame t + B - 1 and A more
look-ahead frames have arrived, i.e. (B - 1 + A) hops later, and in diffusion mode N - 1 hops
after that. 510/128 at 16 kHz, B = 8, A = 4: 509 + 11·128 = 1917 samples = 119.8 ms.

Scale. The offline pipeline divides by the file's peak, which a stream cannot know: a window is
divided by the running peak of the input up to the last sample its frames depend on (so the gain
stays causal), in the compressed domain (peak^-alpha), or by a fixed ``input_peak``. Diffusion
states are kept in raw units, so a growing peak rescales them consistently.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig
from .enhance import (
    PRECISIONS,
    check_atten_lim,
    enhance_spectrogram,
    limit_attenuation,
    pick_device,
)
from .models import StoRM, channels_to_complex, complex_to_channels
from .nets.causal import CausalStream
from .nets.layers import ResnetBlockBigGAN
from .sampling import time_grid
from .spec_streaming import StreamingAnalyser, StreamingSynthesiser
from .tensors import complex_randn

__all__ = ["MODES", "RealtimeEnhancer", "StreamStats", "frame_score", "frames_for_latency"]
__all__ += ["causal_predictor", "resolve_mode"]

MODES = ("predictive", "storm", "score", "diffusion", "bridge", "passthrough")
CAUSAL_BLOCK_FRAMES = 4  # a causal predictor's default hop: 509 + (3 + L)·128 samples (L 1: 64 ms)
_NEEDS = {  # model kinds each mode runs on
    "predictive": ("predictive", "storm"),
    "storm": ("storm",),  # as offline: a score model has no predictor to regenerate from
    "score": ("storm", "score"),
    "diffusion": ("storm", "score"),
    "bridge": ("bridge",),
    "passthrough": ("predictive", "storm", "score", "bridge"),
}


# ---------------------------------------------------------------------------------------------
# Per-frame diffusion times for NCSN++ (one network call over frames at different times)

_FRAME_TIME = threading.local()  # .temb: (B, T, temb_dim) while a per-frame call runs
_HOOKS_LOCK = threading.Lock()


def _zero_global_temb(module, inputs, output):
    """``time_proj`` hook: drop the scalar-time bias while per-frame biases are in use."""
    return torch.zeros_like(output) if getattr(_FRAME_TIME, "temb", None) is not None else None


def _add_frame_temb(time_proj: torch.nn.Linear, module, inputs, output):
    """``conv1`` hook: add the block's time bias per frame, (B, C, F', T') + (B, C, 1, T')."""
    temb = getattr(_FRAME_TIME, "temb", None)
    if temb is None:
        return None
    bias = F.linear(temb, time_proj.weight, time_proj.bias).transpose(1, 2)  # (B, C, T)
    if bias.shape[-1] != output.shape[-1]:  # a coarser level: average the frames it merges
        bias = F.adaptive_avg_pool1d(bias, output.shape[-1])
    return output + bias.unsqueeze(2).to(output.dtype)


def _install_frame_time_hooks(backbone: torch.nn.Module) -> bool:
    """Hook every time-conditional residual block once; thread-safe; False if unsupported."""
    with _HOOKS_LOCK:
        if getattr(backbone, "_audiodiff_frame_time", False):
            return True
        blocks = [
            m
            for m in backbone.modules()
            if isinstance(m, ResnetBlockBigGAN) and m.time_proj is not None
        ]
        if not blocks or getattr(backbone, "time_embed", None) is None:
            return False
        for block in blocks:
            block.time_proj.register_forward_hook(_zero_global_temb)
            block.conv1.register_forward_hook(partial(_add_frame_temb, block.time_proj))
        backbone._audiodiff_frame_time = True
        return True


def frame_score(
    score_model: torch.nn.Module, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The score with one diffusion time per frame, in ONE network call.

    x: (B, 1, F, T) complex, cond: (B, C, F, T) complex, t: (B, T) -> score (B, 1, F, T).
    A model with its own ``frame_score`` method is used as is. For a :class:`ScoreModel` over
    NCSN++, every residual block's time bias ``proj(temb(t))`` is computed per frame (averaged
    over the frames a coarser level merges) and the network scaling s(t) is applied per frame,
    exactly: the final 1x1 projection is affine, W(c·h) + b = c·(Wh + b - b) + b. With a
    constant t this equals ``score_model(x, cond, t[:, 0])`` up to rounding. Only the plain
    score parametrisation (c_in 1, c_skip 0, c_out ±1) is supported.
    """
    if hasattr(score_model, "frame_score"):
        return score_model.frame_score(x, cond, t)
    backbone = getattr(score_model, "backbone", None)
    param = getattr(score_model, "param", None)
    plain = param is not None and param.loss_type == "score_matching" and param.c_in == "1"
    plain = plain and param.c_skip == "0" and param.c_out in ("1", "-1")
    if not plain or backbone is None or not _install_frame_time_hooks(backbone):
        raise TypeError(f"{type(score_model).__name__} cannot take one diffusion time per frame")
    batch, frames = t.shape
    net_in = complex_to_channels(torch.cat([x, cond], dim=1))  # (B, 2(1 + C), F, T)
    _FRAME_TIME.temb = backbone.time_embed(t.reshape(-1)).reshape(batch, frames, -1)
    try:
        out = backbone(net_in, t.mean(dim=1))  # (B, 2, F, T); the global time bias is zeroed
    finally:
        _FRAME_TIME.temb = None
    scale = score_model.network_scale(t.reshape(-1))
    if scale is not None:
        scale = scale.reshape(batch, 1, 1, frames)
        if backbone.config.out_scale_at == "output":
            out = scale * out
        else:
            bias = backbone.output_proj.bias
            bias = 0.0 if bias is None else bias[None, :, None, None]
            out = scale * (out - bias) + bias
    return -channels_to_complex(out) if param.c_out == "-1" else channels_to_complex(out)


# ---------------------------------------------------------------------------------------------
# Statistics


@dataclass
class StreamStats:
    """Per-block compute time, real-time factor (compute / block duration) and late blocks."""

    block_seconds: float
    latency_ms: float
    blocks: int = 0
    late_blocks: int = 0
    network_calls: int = 0
    total_compute: float = 0.0
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # compute seconds

    def record(self, seconds: float, calls: int) -> None:
        self.blocks += 1
        self.network_calls += calls
        self.total_compute += seconds
        self.late_blocks += seconds > self.block_seconds
        self.recent.append(seconds)

    @property
    def rtf(self) -> list[float]:
        """RTF of the recent blocks, oldest first."""
        return [s / self.block_seconds for s in self.recent]

    def summary(self) -> dict:
        """JSON-friendly figures: latency, RTF (mean over all blocks, last, p50/p90/max recent)."""
        rtf = np.asarray(self.rtf) if self.recent else np.zeros(1)
        return {
            "latency_ms": self.latency_ms,
            "blocks": self.blocks,
            "late_blocks": self.late_blocks,
            "network_calls": self.network_calls,
            "rtf_mean": self.total_compute / max(self.blocks, 1) / self.block_seconds,
            "rtf_last": float(rtf[-1]),
            "rtf_p50": float(np.percentile(rtf, 50)),
            "rtf_p90": float(np.percentile(rtf, 90)),
            "rtf_max": float(rtf.max()),
            "compute_ms_mean": 1000 * self.total_compute / max(self.blocks, 1),
        }


def frames_for_latency(
    latency_ms: float, config: ModelConfig, mode: str = "predictive", steps: int = 1
) -> tuple[int, int]:
    """The (block_frames, lookahead_frames) of the largest block whose latency fits ``latency_ms``.

    Non-diffusion modes use B - 1 + A <= H hops with A = H // 3 look-ahead; diffusion needs
    N·B - 1 + A <= H with A = H // (3N); a causal predictor (predictive mode) has its own
    look-ahead L, so B = H + 1 - L. ``H = floor((latency - (n_fft - 1)) / hop)``.
    """
    spec = config.spec
    budget = latency_ms * spec.sample_rate / 1000 - (spec.n_fft - 1)
    if budget < 0:
        floor_ms = 1000 * (spec.n_fft - 1) / spec.sample_rate
        raise ValueError(f"latency {latency_ms} ms is below the STFT's own {floor_ms:.1f} ms")
    hops = int(budget // spec.hop_length)
    blocks = steps if mode == "diffusion" else 1
    lookahead = hops // (3 * blocks)
    predictor = config.predictor
    if mode == "predictive" and predictor is not None and predictor.causal:
        lookahead = predictor.lookahead
    block = (hops + 1 - lookahead) // blocks
    if block < 1:
        raise ValueError(f"latency {latency_ms} ms is too short for {blocks} buffered blocks")
    return block, lookahead


def _frame_multiple(model: torch.nn.Module | None) -> int:
    """lcm of the backbones' time multiples, 2**(levels - 1) (1 causal or without NCSN++)."""
    factors = [1]
    for module in model.modules() if model is not None else ():
        factor = getattr(getattr(module, "config", None), "time_multiple", None)
        if isinstance(factor, int):
            factors.append(factor)
    return math.lcm(*factors)


def causal_predictor(model: torch.nn.Module | None) -> torch.nn.Module | None:
    """A model's predictive stage (a PredictiveModel) if its NCSN++ is causal (nets/causal.py),
    else None."""
    predictor = getattr(model, "predictor", model)
    backbone = getattr(predictor, "backbone", None)
    return predictor if getattr(getattr(backbone, "config", None), "causal", False) else None


def resolve_mode(config: ModelConfig, mode: str | None) -> str:
    """``mode`` (None: the model's default) checked against what the model kind can run."""
    mode = mode or config.default_mode
    if mode not in MODES:
        raise ValueError(f"streaming mode must be one of {MODES}, got {mode!r}")
    has_predictor = mode == "predictive" and config.predictor is not None  # a bridge from Ŷ too
    if config.kind not in _NEEDS[mode] and not has_predictor:
        raise ValueError(f"a {config.kind!r} model cannot stream in mode {mode!r}")
    return mode


def _sampler_calls(settings) -> int:
    """Network evaluations of one run of the configured sampler."""
    if settings.method == "pc":
        return settings.steps * (1 + settings.corrector_steps)
    if settings.method in ("sb_ode", "sb_sde"):
        return settings.steps
    return settings.steps if settings.method == "ode_euler" else 2 * settings.steps - 1


# ---------------------------------------------------------------------------------------------
# Streaming diffusion


class _DiffusionBuffer:
    """N blocks at staggered diffusion times; every hop costs ONE score-network call per PC step.

    Grid t_0 = T > t_1 > ... > t_{N-1} = t_eps (``time_grid``, as offline). A block enters at
    stage 0 from x = m + σ(T)·z, m its mean target (Ŷ for StoRM, y for a score model, fixed at
    entry). Each hop every buffered block takes one reverse-diffusion step t_j -> t_{j+1} in one
    call of :func:`frame_score` over the window; the block at stage N-1 steps from t_eps to 0
    noise-free (the mean, as the offline sampler's last step) and leaves. So a block is output
    N - 1 hops after it entered: diffusion mode adds (N - 1)·B·hop samples of latency.
    With ``corrector_steps`` C > 0, each hop first takes C annealed-Langevin steps (step size
    2 (snr σ(t))², per frame, as :func:`~audiodiff.sampling.annealed_langevin_step`) on the
    buffered frames: 1 + C calls per hop, as the offline PC sampler per step.
    Other frames in the window only condition the network: finished blocks (their estimates,
    t = t_eps), look-ahead (m + σ(T)·z with fresh z each hop, t = T) and left zero padding (t = T).
    """

    def __init__(self, model, settings, generator: torch.Generator):
        if settings.method != "pc":  # reverse_diffusion and euler_maruyama: the same update here
            raise ValueError(
                f"the streaming diffusion mode runs the predictor-corrector sampler, not "
                f"{settings.method!r}: use mode 'storm' or 'score' for this sampler"
            )
        steps, t_eps = settings.steps, settings.t_eps
        self.corrector_steps, self.snr = settings.corrector_steps, settings.snr
        self.storm = isinstance(model, StoRM)
        self.score = model.score if self.storm else model
        self.predictor = model.predictor if self.storm else None
        self.sde = self.score.sde
        self.grid = time_grid(steps, T=self.sde.T, t_eps=t_eps).tolist()
        self.sigma_T = float(self.sde.marginal_std(torch.tensor([self.sde.T])))
        self.generator = generator
        self.blocks: deque[list[int]] = deque()  # [start frame, stop frame, stage], oldest first

    def hop(
        self, window: torch.Tensor, w0: int, enter: tuple[int, int] | None, gain: float
    ) -> tuple[torch.Tensor, tuple[int, int] | None, int]:
        """One hop. window: (3, F, W) raw [y, m, x] of frames [w0, w0 + W) (zeros before frame
        0); enter: the new block's (start, stop) or None (draining). Returns the updated window,
        the (start, stop) of the block that left (its estimate is window[2]) or None, and the
        number of network calls."""
        y, m, x = (window[i][None, None] * gain for i in range(3))  # (1, 1, F, W) each
        width, calls = y.shape[-1], 0
        if enter is not None:
            self.blocks.append([enter[0], enter[1], 0])
            if self.storm:
                fresh_m, calls = self.predictor(y), 1  # Ŷ for the new block and the look-ahead
            else:
                fresh_m = y
            m[..., enter[0] - w0 :] = fresh_m[..., enter[0] - w0 :]
        fresh = slice(self.blocks[-1][0] - w0 if enter else self.blocks[-1][1] - w0, width)
        z_prior = complex_randn(tuple(y.shape), generator=self.generator, device=y.device)
        z_step = complex_randn(tuple(y.shape), generator=self.generator, device=y.device)
        x[..., fresh] = m[..., fresh] + self.sigma_T * z_prior[..., fresh]
        t = torch.full((width,), self.grid[-1], device=y.device)  # finished context: t_eps
        t_next = t.clone()  # dt = 0 outside the buffer: those frames do not move
        t[fresh] = t_next[fresh] = self.grid[0]
        t[: max(0, -w0)] = t_next[: max(0, -w0)] = self.grid[0]  # zero padding
        last = torch.zeros(width, dtype=torch.bool, device=y.device)
        for start, stop, stage in self.blocks:
            block = slice(start - w0, stop - w0)
            t[block] = self.grid[stage]
            t_next[block] = self.grid[stage + 1] if stage + 1 < len(self.grid) else 0.0
            last[block] = stage + 1 == len(self.grid)
        cond = StoRM.condition(y, m) if self.storm else y
        moving = (t != t_next).reshape(1, 1, 1, -1)  # the buffered blocks' frames
        for _ in range(self.corrector_steps):  # annealed Langevin at each frame's own t
            score = frame_score(self.score, x, cond, t[None])  # (1, 1, F, W), one call
            eps = (2.0 * (self.snr * self.sde.marginal_std(t)) ** 2).reshape(1, 1, 1, -1)
            z = complex_randn(tuple(y.shape), generator=self.generator, device=y.device)
            x = torch.where(moving, x + eps * score + (2.0 * eps).sqrt() * z, x)
        score = frame_score(self.score, x, cond, t[None])  # (1, 1, F, W), one call
        calls += 1 + self.corrector_steps
        dt, g = (t - t_next).reshape(1, 1, 1, -1), self.sde.diffusion(t).reshape(1, 1, 1, -1)
        x_mean = x - self.sde.drift(x, m, t) * dt + g.square() * dt * score
        noise = torch.where(last.reshape(1, 1, 1, -1), 0.0, g * dt.sqrt())
        x = x_mean + noise * z_step
        for block in self.blocks:
            block[2] += 1
        done = None
        if self.blocks and self.blocks[0][2] == len(self.grid):
            done = tuple(self.blocks.popleft()[:2])
        return torch.cat([y, m, x], dim=1)[0] / gain, done, calls


# ---------------------------------------------------------------------------------------------
# The stream processor


def check_samples(wave: np.ndarray) -> None:
    """Refuse (n,) samples a stream must not take: NaN/Inf, or outside [-1, 1] (full scale)."""
    if not np.isfinite(wave).all():
        raise ValueError("samples must be finite (NaN or Inf received)")
    peak = float(np.abs(wave).max(initial=0.0))
    if peak > 1.0:
        raise ValueError(f"samples must lie in [-1, 1] (full scale), got a peak of {peak:.6g}")


class RealtimeEnhancer:
    """Block-online enhancement of one mono stream at the model's rate (see the module docstring).

    >>> rt = RealtimeEnhancer(model, config, mode="predictive", block_frames=8)
    >>> out = rt.push(chunk)   # (n,) in -> (n,) float32: the enhanced input, latency_samples late
    >>> tail = rt.flush()      # end of stream: the last latency_samples samples; resets
    >>> rt.latency_ms, rt.stats.summary()

    ``steps`` defaults to the model's sampler steps; ``seed`` makes the stochastic modes
    reproducible (the same input gives the same output). ``input_peak`` fixes the normalisation
    peak (default: the running peak); ``atten_lim_db`` mixes the input back in, as
    :func:`~audiodiff.enhance.limit_attenuation`; ``precision="bf16"`` runs the networks under
    autocast; ``clock`` times the blocks for ``stats``. A chunk with samples that are not finite
    or lie outside [-1, 1] is refused (ValueError) before it touches the state, so the stream
    goes on as if it had not been pushed. Not
    thread-safe: one per stream; the model may be shared between instances in different threads.
    """

    def __init__(
        self,
        model: torch.nn.Module | None,
        config: ModelConfig,
        *,
        mode: str | None = None,
        block_frames: int | None = None,
        context_frames: int | None = None,
        lookahead_frames: int | None = None,
        steps: int | None = None,
        device: str | torch.device | None = "auto",
        seed: int = 0,
        input_peak: float | None = None,
        atten_lim_db: float | None = None,
        precision: str = "fp32",
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.mode = resolve_mode(config, mode)
        self.causal_stage = causal_predictor(model) if self.mode == "predictive" else None
        context_frames, lookahead_frames = self._window_frames(context_frames, lookahead_frames)
        if block_frames is None:
            block_frames = CAUSAL_BLOCK_FRAMES if self.causal_stage is not None else 8
        if block_frames < 1 or context_frames < 0 or lookahead_frames < 0:
            raise ValueError("need block_frames >= 1, context_frames >= 0, lookahead_frames >= 0")
        self.config, self.spec = config, config.spec
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.device = pick_device(device)
        self.model = model.to(self.device).eval() if model is not None else None
        if self.model is None and self.mode != "passthrough":
            raise ValueError(f"mode {self.mode!r} needs a model")
        sampler_steps = config.sampler.steps if steps is None else steps
        self.settings = replace(config.sampler, steps=sampler_steps)
        if self.mode in ("storm", "score", "diffusion", "bridge") and sampler_steps < 1:
            raise ValueError(f"mode {self.mode!r} needs steps >= 1")
        self.block_frames, self.context_frames = block_frames, context_frames
        self.lookahead_frames = lookahead_frames
        self.buffer_blocks = sampler_steps if self.mode == "diffusion" else 1  # N
        span = context_frames + self.buffer_blocks * block_frames + lookahead_frames
        multiple = _frame_multiple(self.model)
        self.window_frames = -(-span // multiple) * multiple
        if self.causal_stage is not None:  # cached state: each hop runs on its new frames only
            self.window_frames = block_frames
        check_atten_lim(atten_lim_db)
        self.seed, self.input_peak, self._clock = seed, input_peak, clock
        self.atten_lim_db = atten_lim_db
        self.reset()

    def _window_frames(self, context: int | None, lookahead: int | None) -> tuple[int, int]:
        """(context, look-ahead) frames: 16 and 4 by default; a causal predictor streams with
        cached state (no context window) and looks ahead exactly its own L frames."""
        if self.causal_stage is None:
            return 16 if context is None else context, 4 if lookahead is None else lookahead
        own = self.causal_stage.backbone.config.lookahead
        if lookahead is not None and lookahead != own:
            raise ValueError(
                f"this causal model looks ahead exactly {own} frames, not {lookahead}: "
                "leave the look-ahead unset"
            )
        if context:
            raise ValueError("a causal model streams with cached state: no context frames")
        return 0, own

    @property
    def latency_samples(self) -> int:
        """n_fft - 1 + (B - 1 + A)·hop + (N - 1)·B·hop (N = steps in diffusion mode, else 1)."""
        hop = self.spec.hop_length
        waiting = self.block_frames - 1 + self.lookahead_frames
        buffered = (self.buffer_blocks - 1) * self.block_frames
        return self.spec.n_fft - 1 + (waiting + buffered) * hop

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency_samples / self.spec.sample_rate

    @property
    def block_samples(self) -> int:
        return self.block_frames * self.spec.hop_length

    @property
    def sample_rate(self) -> int:
        return self.spec.sample_rate

    def reset(self) -> None:
        """Forget the stream and the statistics; reseed."""
        self.analyser = StreamingAnalyser(self.spec)
        self.synthesiser = StreamingSynthesiser(self.spec)
        self._generator = torch.Generator(self.device).manual_seed(self.seed)
        self._store = torch.zeros(3, self.spec.num_freqs, 0, dtype=torch.complex64)
        self._store = self._store.to(self.device)  # (3, F, n): raw [y, m, x] of frames base..
        self._base = self._frames = self._next_block = self._num_samples = 0
        self._peak = 0.0  # running max |x| of the input so far
        self._peaks = np.zeros(0, np.float32)  # (n,): the running peak at each stored frame
        self._queue = np.zeros(self.latency_samples, np.float32)  # output not returned yet
        self._dry = np.zeros(self.latency_samples, np.float32)  # input, as late as the output
        self._diffusion = None
        self._causal = None
        if self.causal_stage is not None:
            self._causal = CausalStream(self.causal_stage.backbone)
            self._pending = self._store.new_zeros(1, 1, self.spec.num_freqs, 0)  # in, not out yet
        if self.mode == "diffusion":
            self._diffusion = _DiffusionBuffer(self.model, self.settings, self._generator)
        self.stats = self._new_stats()

    def _new_stats(self) -> StreamStats:
        block_seconds = self.block_samples / self.spec.sample_rate
        return StreamStats(block_seconds=block_seconds, latency_ms=self.latency_ms)

    def push(self, samples) -> np.ndarray:
        """(n,) float samples (numpy or torch) -> (n,) float32: the output ``latency_samples`` late.

        Output sample i is the enhanced input sample i - latency_samples (zeros before the start).
        Raises ValueError, with the state untouched, for samples that are not finite or lie
        outside [-1, 1]: one such value would otherwise set the running peak (the
        normalisation of every later block) for the rest of the stream.
        """
        wave = np.asarray(samples, dtype=np.float32).reshape(-1)
        if wave.size:
            check_samples(wave)  # before any state update
            if self._num_samples == 0:  # a new stream: not the figures of one that flush ended
                self.stats = self._new_stats()
            frames = self.analyser.push(torch.from_numpy(wave)[None].to(self.device))
            self._add_frames(frames, self._running_peak(wave, frames.shape[-1]))
            self._num_samples += wave.size
            self._run_blocks(final=False)
            self._dry = np.concatenate([self._dry, wave])
        return self._take(wave.size)

    def _running_peak(self, wave: np.ndarray, count: int) -> np.ndarray:
        """(count,) peak |x| up to each new frame's last input sample: the gain stays causal."""
        spec, pad = self.spec, self.spec.n_fft // 2  # frame 0 also reflects x[pad]
        running = np.maximum.accumulate(np.maximum(np.abs(wave), self._peak))  # (n,)
        self._peak = float(running[-1])
        frames = np.arange(self._frames, self._frames + count)
        last = np.maximum(frames * spec.hop_length + spec.n_fft - 1 - spec.n_fft // 2, pad)
        return running[np.clip(last - self._num_samples, 0, wave.size - 1)]

    def flush(self) -> np.ndarray:
        """End of stream: the last ``latency_samples`` samples (latency_samples,); resets."""
        total, stats = self._num_samples, self.stats
        if self._num_samples > self.spec.n_fft // 2:  # else too short for the STFT: silence
            frames = self.analyser.flush()
            self._add_frames(frames, np.full(frames.shape[-1], self._peak, np.float32))
            self._run_blocks(final=True)
            tail = self.synthesiser.flush(length=total)[0].cpu().numpy()
            self._queue = np.concatenate([self._queue, tail])
        out = np.zeros(self.latency_samples, np.float32)
        available = self._queue[: self.latency_samples]
        out[: available.shape[0]] = available
        out = self._limited(out, self._dry[: self.latency_samples])
        self.reset()
        self.stats = stats  # keep the finished stream's figures readable
        return out

    def _take(self, n: int) -> np.ndarray:
        if self._queue.shape[0] < n:  # cannot happen: latency_samples bounds every wait
            raise RuntimeError("the stream fell behind its documented latency")
        out, self._queue = self._queue[:n], self._queue[n:]
        dry, self._dry = self._dry[:n], self._dry[n:]
        return self._limited(out, dry)

    def _limited(self, out: np.ndarray, dry: np.ndarray) -> np.ndarray:
        if self.atten_lim_db is None:
            return out
        return limit_attenuation(out, dry, self.atten_lim_db).astype(np.float32, copy=False)

    def _add_frames(self, frames: torch.Tensor, peaks: np.ndarray) -> None:
        """Append analysed frames (1, 1, F, k) and their running peaks (k,); drop old frames."""
        columns = torch.zeros(3, *frames.shape[2:], dtype=self._store.dtype, device=self.device)
        columns[0] = frames[0, 0]
        self._store = torch.cat([self._store, columns], dim=-1)
        self._peaks = np.concatenate([self._peaks, peaks])
        self._frames += frames.shape[-1]
        oldest = self._next_block * self.block_frames - self.window_frames  # next windows' start
        if oldest - self._base > self.window_frames:
            self._store = self._store[..., oldest - self._base :]
            self._peaks = self._peaks[oldest - self._base :]
            self._base = oldest

    def _gain(self, end: int) -> float:
        """Compressed-domain peak normalisation peak^-alpha for a window of frames [.., end)."""
        peak = self.input_peak
        if peak is None:
            peak = float(self._peaks[end - 1 - self._base])  # the input up to frame end - 1
        return max(peak, 1e-8) ** -self.spec.alpha

    def _run_blocks(self, final: bool) -> None:
        """Process every block whose look-ahead is complete (all remaining ones when final)."""
        B, A = self.block_frames, self.lookahead_frames
        if self._causal is not None:
            return self._run_causal(final)
        while self._next_block * B < self._frames:
            start = self._next_block * B
            stop = min(start + B, self._frames)
            if not final and self._frames < start + B + A:
                return
            self._hop(start, stop, min(start + B + A, self._frames))
            self._next_block += 1
        while final and self._diffusion is not None and self._diffusion.blocks:
            self._hop(None, None, self._frames)  # drain the diffusion buffer

    def _run_causal(self, final: bool) -> None:
        """Cached path: every B new frames (the rest when final) go through the causal network
        once; its outputs lag the input by its look-ahead, which ``flush`` releases at the end."""
        B = self.block_frames
        while self._frames - self._next_block * B >= (1 if final else B):
            start = self._next_block * B
            self._causal_hop(start, min(start + B, self._frames), last=False)
            self._next_block += 1
        if final:
            self._causal_hop(self._frames, self._frames, last=True)

    def _causal_hop(self, start: int, stop: int, last: bool) -> None:
        """Frames [start, stop) -> the causal network's new output frames -> the synthesiser."""
        began = self._clock()
        y = self._store[0, :, start - self._base : stop - self._base][None, None]  # (1, 1, F, n)
        gain = self._gain(max(stop, 1))
        with torch.inference_mode():
            out = self._causal.push(complex_to_channels(y * gain)) if stop > start else None
            if last:
                tail = self._causal.flush()
                out = tail if out is None else torch.cat([out, tail], dim=-1)
            ready = out.shape[-1]  # output frames lag the input by the look-ahead
            self._pending = torch.cat([self._pending, y], dim=-1)
            y_ready, self._pending = self._pending[..., :ready], self._pending[..., ready:]
            if ready:  # (1, 2, F, m) -> Ŷ (1, 1, F, m), in the input's units
                frames = self.causal_stage.estimate(y_ready * gain, channels_to_complex(out)) / gain
                wave = self.synthesiser.push(frames)[0].cpu().numpy()
                self._queue = np.concatenate([self._queue, wave])
        self.stats.record(self._clock() - began, int(stop > start or last))

    def _hop(self, start: int | None, stop: int | None, end: int) -> None:
        """Process the window of frames [end - W, end) for block [start, stop), timed."""
        began = self._clock()
        w0 = end - self.window_frames
        lo = w0 - self._base
        window = self._store[..., max(lo, 0) : end - self._base]  # (3, F, <= W)
        window = F.pad(window, (max(-lo, 0), 0))  # (3, F, W), zeros before frame 0
        gain = self._gain(end)
        bf16 = self.precision == "bf16"  # the networks under autocast, the rest in float32
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)
        with torch.inference_mode(), autocast:
            if self._diffusion is not None:
                enter = None if start is None else (start, stop)
                window, done, calls = self._diffusion.hop(window, w0, enter, gain)
                keep = max(lo, 0) - lo  # write back the columns that exist in the store
                self._store[..., max(lo, 0) : end - self._base] = window[..., keep:]
                frames = None if done is None else window[2, :, done[0] - w0 : done[1] - w0]
            else:
                enhanced, calls = self._process(window[0][None, None] * gain)
                frames = enhanced[0, 0, :, start - w0 : stop - w0] / gain
            if frames is not None:
                out = self.synthesiser.push(frames[None, None])[0].cpu().numpy()
                self._queue = np.concatenate([self._queue, out])
        self.stats.record(self._clock() - began, calls)

    def _process(self, y: torch.Tensor) -> tuple[torch.Tensor, int]:
        """One window (1, 1, F, W), normalised -> its estimate (1, 1, F, W), network calls."""
        storm = isinstance(self.model, StoRM)
        if self.mode == "passthrough":
            return y, 0
        if self.mode == "predictive":
            return (self.model.predictor if storm else self.model)(y), 1
        sampler_mode = "storm" if self.mode == "storm" and storm else "score"
        sampler_mode = "bridge" if self.mode == "bridge" else sampler_mode
        x = enhance_spectrogram(
            self.model, y, self.settings, sampler_mode, generator=self._generator
        )
        predictor_pass = sampler_mode == "storm" or (storm and sampler_mode == "bridge")
        return x, _sampler_calls(self.settings) + predictor_pass
