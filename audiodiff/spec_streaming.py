"""Streaming STFT front end: block-wise analysis and synthesis equal to :mod:`audiodiff.spec`.

Coordinates. The offline transform (``torch.stft``/``torch.istft`` with ``center=True``) works on
the *padded* signal ``p = [reflect-pad(P), x[0..L), reflect-pad(P)]`` with ``P = n_fft // 2``.
Frame ``t`` covers padded samples ``[t·hop, t·hop + n_fft)``, i.e. input samples
``[t·hop - P, t·hop - P + n_fft)``, centred on input sample ``t·hop``.

Start boundary. The left reflection is ``p[P - k] = x[k]`` for ``k = 1..P``: it only uses the
input samples ``x[1..P]``. Frame 0 spans ``x[..n_fft - P - 1]``, which ends at ``x[P]`` for odd
and at ``x[P - 1]`` for even ``n_fft``, so the reflection needs at most one sample more than the
frame itself and a causal streamer *can* reproduce the offline left padding exactly:
:class:`StreamingAnalyser` holds frame 0 until ``x[P]`` has arrived (``P + 1`` samples), then
prepends the reflection. Hence every streamed
frame, the first ones included, is the offline ``Spectrogram.analyse`` frame of the whole signal
(up to floating-point rounding); there are no boundary frames. The right reflection is applied by
:meth:`StreamingAnalyser.flush`, exactly as offline. As offline (``torch.stft`` refuses a reflect
pad at least as long as the input), a stream of ``1..P`` samples cannot be flushed.

Latency (default 510/128 at 16 kHz: 509 samples = 31.8125 ms). Input sample ``x[n]`` (padded index
``n + P``) is final in the synthesiser once frame ``t = (n + P) // hop`` has been added (later
frames start after it). That frame is complete when ``x[t·hop - P + n_fft - 1]`` has arrived.
The wait ``t·hop + n_fft - 1 - P - n = n_fft - 1 - ((n + P) mod hop)`` is at most ``n_fft - 1``,
reached whenever ``n + P`` is a multiple of ``hop``. It splits into the analyser's look-ahead past
a frame centre, ``n_fft - 1 - P`` (254), and the synthesiser's wait for the frame centred up to
``P`` samples later, ``P`` (255). Frame 0's extra sample ``x[P]`` never exceeds this bound. So
:class:`StreamingSTFT` returns ``y[n] = x̂[n - latency]`` with ``latency = n_fft - 1``, the
smallest constant delay that works for every block size (block size 1 included).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from .spec import SpecConfig, compress, decompress, make_window

__all__ = ["StreamingAnalyser", "StreamingSynthesiser", "StreamingSTFT"]


def _complex_dtype(real: torch.dtype) -> torch.dtype:
    """float32 -> complex64, float64 -> complex128."""
    return torch.promote_types(real, torch.complex64)


def _check_batch(x: torch.Tensor, batch: int, ndim: int, what: str) -> None:
    if x.ndim != ndim or x.shape[0] != batch:
        raise ValueError(f"{what}: expected {ndim} dims with batch {batch}, got {tuple(x.shape)}")


def _cached_window(cache: dict, config: SpecConfig, device, dtype) -> torch.Tensor:
    """``make_window(config)`` on ``device`` / ``dtype``, built once per stream object (a hop
    of a few frames would otherwise spend a tenth of its STFT time building it again)."""
    key = (device, dtype)
    if key not in cache:
        cache[key] = make_window(config, device=device, dtype=dtype)
    return cache[key]


class StreamingAnalyser:
    """Samples (B, n) of any block size -> the compressed complex frames (B, 1, F, k) completed.

    Concatenating the outputs of all :meth:`push` calls and of :meth:`flush` along the last axis
    gives ``Spectrogram(config).analyse(x)`` of the whole stream ``x`` (see the module docstring
    for the start boundary). Frame ``t`` is emitted by the push that delivers input sample
    ``max(t·hop + n_fft - 1 - P, P)``, ``P = n_fft // 2``.
    """

    def __init__(self, config: SpecConfig, batch: int = 1):
        self.config = config
        self.batch = batch
        self._windows: dict = {}
        self.reset()

    def reset(self) -> None:
        """Forget the stream (done by :meth:`flush`)."""
        self._buffer = torch.zeros(self.batch, 0)  # (B, n): x[0..] before start, then padded
        self._offset = 0  # padded index of _buffer[:, 0] once started
        self._num_samples = 0  # input samples pushed
        self._next_frame = 0  # index of the next frame to emit
        self._started = False  # left reflection prepended?

    @property
    def latency_samples(self) -> int:
        """Look-ahead past a frame's centre before the frame is complete: ``n_fft - 1 - P``."""
        return self.config.n_fft - 1 - self.config.n_fft // 2

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """(B, n) real, n >= 0 -> (B, 1, F, k) complex, the k >= 0 frames completed by this push."""
        _check_batch(samples, self.batch, 2, "samples")
        pad = self.config.n_fft // 2
        self._buffer = torch.cat([self._buffer.to(samples), samples], dim=-1)
        self._num_samples += samples.shape[-1]
        if not self._started:
            if self._num_samples <= pad:
                return self._empty(samples)
            head = self._buffer[:, 1 : pad + 1].flip(-1)  # (B, P): x[P], ..., x[1]
            self._buffer = torch.cat([head, self._buffer], dim=-1)
            self._started = True
        return self._emit(end=pad + self._num_samples)

    def flush(self) -> torch.Tensor:
        """End of stream: the remaining frames (B, 1, F, k), right edge reflect-padded; resets."""
        pad = self.config.n_fft // 2
        if not self._started:
            if self._num_samples > 0:
                raise ValueError(
                    f"a stream of {self._num_samples} samples is too short for the centred STFT's "
                    f"reflect padding (needs more than n_fft // 2 = {pad} samples)"
                )
            frames = self._empty(self._buffer)
        else:
            tail = self._buffer[:, -(pad + 1) : -1].flip(-1)  # (B, P): x[L-2], ..., x[L-1-P]
            self._buffer = torch.cat([self._buffer, tail], dim=-1)
            frames = self._emit(end=self._num_samples + 2 * pad)
        self.reset()
        return frames

    def _emit(self, end: int) -> torch.Tensor:
        """Frames lying inside padded samples ``[0, end)`` not emitted yet, then trim the buffer."""
        cfg = self.config
        pad = cfg.n_fft // 2
        first = self._next_frame
        count = max(0, (end - cfg.n_fft) // cfg.hop_length + 1 - first)
        if count == 0:
            return self._empty(self._buffer)
        start = first * cfg.hop_length - self._offset
        stop = start + (count - 1) * cfg.hop_length + cfg.n_fft
        segment = self._buffer[:, start:stop]  # (B, (count - 1)·hop + n_fft)
        window = _cached_window(self._windows, cfg, segment.device, segment.dtype)
        spec = torch.stft(
            segment,
            cfg.n_fft,
            cfg.hop_length,
            window=window,
            center=False,
            return_complex=True,
        )  # (B, F, count)
        self._next_frame = first + count
        # Keep what the next frame needs, and at least x[L-1-P..L-1] for the right reflection.
        keep_from = min(self._next_frame * cfg.hop_length, end - (pad + 1))
        self._buffer = self._buffer[:, keep_from - self._offset :]
        self._offset = keep_from
        return compress(spec, cfg.alpha, cfg.beta).unsqueeze(1)  # (B, F, k) -> (B, 1, F, k)

    def _empty(self, like: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, 0) complex on ``like``'s device, matching its precision."""
        shape = (self.batch, 1, self.config.num_freqs, 0)
        return torch.zeros(shape, dtype=_complex_dtype(like.dtype), device=like.device)


class StreamingSynthesiser:
    """Compressed complex frames (B, 1, F, k), any chunking -> the output samples (B, m) now final.

    Inverse compression, iFFT, windowing and weighted overlap-add divided by the overlap-added
    squared window, exactly as ``torch.istft(center=True)``. The output is sample-aligned with the
    offline ``Spectrogram.synthesise`` (its first ``P = n_fft // 2`` padded samples are dropped);
    the concatenation of all pushes and ``flush(length)`` equals ``synthesise(frames, length)``.
    After ``K`` frames, output samples ``[0, max(0, K·hop - P))`` have been emitted.
    """

    def __init__(self, config: SpecConfig, batch: int = 1):
        self.config = config
        self.batch = batch
        self._windows: dict = {}
        self._envelopes: dict = {}  # (k, device, dtype) -> overlap-added squared window
        self.reset()

    def reset(self) -> None:
        """Forget the stream (done by :meth:`flush`)."""
        self._acc = torch.zeros(self.batch, 0)  # (B, n): overlap-add from padded index K·hop on
        self._env = torch.zeros(0)  # (n,): overlap-added squared window, same span
        self._frames = 0  # K, frames received

    @property
    def latency_samples(self) -> int:
        """Worst-case wait for the frame centred ``P = n_fft // 2`` samples after a sample."""
        return self.config.n_fft // 2

    def push(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, k) complex, k >= 0 -> (B, m) real, the samples completed by these frames."""
        _check_batch(frames, self.batch, 4, "frames")
        cfg = self.config
        n_fft, hop, pad = cfg.n_fft, cfg.hop_length, cfg.n_fft // 2
        if frames.shape[1:3] != (1, cfg.num_freqs):
            raise ValueError(f"frames: expected (B, 1, {cfg.num_freqs}, k), got {frames.shape}")
        count = frames.shape[-1]
        real = frames.real.dtype
        if count == 0:
            return torch.zeros(self.batch, 0, dtype=real, device=frames.device)
        spec = decompress(frames.squeeze(1), cfg.alpha, cfg.beta)  # (B, 1, F, k) -> (B, F, k)
        window = _cached_window(self._windows, cfg, frames.device, real)
        chunk = torch.fft.irfft(spec, n=n_fft, dim=1) * window[:, None]  # (B, n_fft, k)
        size = (count - 1) * hop + n_fft
        fold = {"output_size": (1, size), "kernel_size": (1, n_fft), "stride": (1, hop)}
        ola = F.fold(chunk, **fold).reshape(self.batch, size)  # (B, 1, 1, size) -> (B, size)
        env = self._envelopes.get((count, window.device, real))
        if env is None:  # the same for every push of k frames: built once
            squares = window.square()[None, :, None].expand(1, n_fft, count)  # (1, n_fft, k)
            env = F.fold(squares, **fold).reshape(size)  # (1, 1, 1, size) -> (size,)
            self._envelopes[(count, window.device, real)] = env
        # The new frames start at padded index K·hop, where the accumulator starts too.
        acc = F.pad(self._acc.to(ola), (0, size - self._acc.shape[-1])) + ola  # (B, size)
        env = F.pad(self._env.to(env), (0, size - self._env.shape[-1])) + env  # (size,)
        done = count * hop  # padded [K·hop, (K + k)·hop) is final now
        first = max(0, pad - self._frames * hop)  # drop the left padding
        out = self._normalise(acc[:, first:done], env[first:done])
        self._acc, self._env = acc[:, done:], env[done:]
        self._frames += count
        return out

    def flush(self, length: int | None = None) -> torch.Tensor:
        """End of stream: the remaining samples (B, m); resets.

        ``length`` is the total output length, as in ``torch.istft``: the stream is cut or
        zero-padded to it. ``None`` gives ``(K - 1)·hop + n_fft - 2P`` samples, like ``torch.istft``
        without ``length``.
        """
        cfg = self.config
        hop, pad = cfg.hop_length, cfg.n_fft // 2
        frames = self._frames
        emitted = max(0, frames * hop - pad)
        if length is None:
            length = (frames - 1) * hop + cfg.n_fft - 2 * pad if frames else 0
        if length < emitted:
            raise ValueError(f"length {length} is shorter than the {emitted} samples emitted")
        first = pad + emitted - frames * hop  # accumulator index of output sample `emitted`
        stop = min(pad + length - frames * hop, self._acc.shape[-1]) if frames else first
        out = self._normalise(self._acc[:, first:stop], self._env[first:stop])
        out = F.pad(out, (0, length - emitted - out.shape[-1]))  # (B, length - emitted)
        self.reset()
        return out

    @staticmethod
    def _normalise(acc: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """(B, m) / (m,), refusing a vanishing envelope like ``torch.istft`` (NOLA)."""
        if env.numel() and env.abs().min() < 1e-11:
            raise ValueError("window overlap-add envelope vanishes (NOLA violated)")
        return acc / env


class StreamingSTFT:
    """Analyser -> ``process(frames)`` -> synthesiser, with a constant delay of ``latency_samples``.

    Each ``push`` of n samples returns exactly n samples, ``y[n] = x̂[n - latency_samples]``
    (zeros for ``n < latency_samples``) where ``x̂`` is the offline
    ``synthesise(process(analyse(x)), len(x))``; with ``process=None`` (identity) ``y`` is the
    input delayed by exactly ``latency_samples``. ``flush`` returns the last ``latency_samples``
    samples. ``process`` maps (B, 1, F, k) -> (B, 1, F, k) and is only called with k >= 1 frames.
    """

    def __init__(
        self,
        config: SpecConfig,
        batch: int = 1,
        process: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        self.config = config
        self.batch = batch
        self.process = process
        self.analyser = StreamingAnalyser(config, batch)
        self.synthesiser = StreamingSynthesiser(config, batch)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (done by :meth:`flush`)."""
        self.analyser.reset()
        self.synthesiser.reset()
        self._queue: torch.Tensor | None = None  # (B, q): output not returned yet
        self._num_samples = 0

    @property
    def latency_samples(self) -> int:
        """Algorithmic delay, analyser + synthesiser: ``n_fft - 1`` (509 for 510/128)."""
        return self.analyser.latency_samples + self.synthesiser.latency_samples

    @property
    def latency_ms(self) -> float:
        """``latency_samples`` in milliseconds (31.8125 for 510/128 at 16 kHz)."""
        return 1000.0 * self.latency_samples / self.config.sample_rate

    def push(self, samples: torch.Tensor) -> torch.Tensor:
        """(B, n) real -> (B, n) real, the input delayed by ``latency_samples`` (and processed)."""
        out = self.synthesiser.push(self._process(self.analyser.push(samples)))
        if self._queue is None:
            self._queue = samples.new_zeros(self.batch, self.latency_samples)  # (B, D)
        queue = torch.cat([self._queue, out.to(samples)], dim=-1)  # (B, q + m)
        n = samples.shape[-1]
        if queue.shape[-1] < n:  # cannot happen: latency_samples bounds the wait of every sample
            raise RuntimeError("streaming STFT fell behind its documented latency")
        self._queue = queue[:, n:]
        self._num_samples += n
        return queue[:, :n]

    def flush(self) -> torch.Tensor:
        """End of stream: the last ``latency_samples`` samples (B, D) (empty if nothing came in)."""
        frames = self._process(self.analyser.flush())
        out = self.synthesiser.push(frames)
        tail = self.synthesiser.flush(length=self._num_samples)
        if self._queue is None or self._num_samples == 0:
            result = tail  # (B, 0)
        else:
            result = torch.cat([self._queue, out.to(self._queue), tail.to(self._queue)], dim=-1)
        self.reset()
        return result

    def _process(self, frames: torch.Tensor) -> torch.Tensor:
        if self.process is None or frames.shape[-1] == 0:
            return frames
        return self.process(frames)
