"""Measuring: network-call probes, peak memory, timed repeats, and the benchmark's inputs.

Peak memory is the increase over what was in use when a timed run started. CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only). CPU: the
resident set size from /proc/self/statm, sampled by a background thread every 2 ms, after
``malloc_trim(0)`` has handed freed heap back to the OS (so memory freed by earlier runs does not
hide this one's); spikes shorter than 2 ms can be missed.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import threading
import time
from dataclasses import replace

EXTRA_PRESETS: dict = {}  # name -> NCSNppConfig, benchmarkable next to the library's PRESETS


def bench_presets() -> dict:
    """The library's NCSN++ presets plus any registered in ``EXTRA_PRESETS``."""
    from ..nets import PRESETS

    return {**PRESETS, **EXTRA_PRESETS}


class NetworkProbe:
    """Counts the calls of a backbone (NFE) and, when ``bf16`` is set, runs it under autocast.

    Installed as the module's instance ``forward``, so ``nn.Module.__call__`` lands here while the
    module, its parameters and its state-dict keys stay where they are.
    """

    def __init__(self, module, device_type: str):
        self.module, self.device_type = module, device_type
        self.calls, self.bf16 = 0, False
        self._forward = module.forward
        module.forward = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if not self.bf16:
            return self._forward(*args, **kwargs)
        import torch

        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            return self._forward(*args, **kwargs).float()


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class MemoryMeter:
    """Peak memory (MB) of a ``with`` block above its start; see the module docstring."""

    def __init__(self, device, interval: float = 0.002):
        self.device, self.interval = device, interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()

    @staticmethod
    def method(device) -> str:
        if device.type == "cuda":
            return "CUDA max_memory_allocated above the start"
        if _rss_bytes() is None:
            return "unavailable (no /proc/self/statm)"
        return "RSS (/proc/self/statm) sampled every 2 ms above the start, after malloc_trim"

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes() or 0)

    def __enter__(self) -> MemoryMeter:
        import torch

        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
        self._base = self._peak = _rss_bytes()
        if self._base is not None:
            self._thread = threading.Thread(target=self._watch, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - self._base) / 2**20
        elif self._base is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mb = (max(self._peak, _rss_bytes() or 0) - self._base) / 2**20


def measure(fn, device, repeats: int, probes: list, warmup: bool = True) -> dict:
    """An untimed warm-up call of ``fn``, then ``repeats`` timed calls, memory and NFE counted."""
    if warmup:
        fn()
    walls, peaks, calls, out = [], [], [], None
    for _ in range(repeats):
        for probe in probes:
            probe.calls = 0
        with MemoryMeter(device) as meter:
            sync(device)
            start = time.perf_counter()
            out = fn()
            sync(device)
            walls.append(time.perf_counter() - start)
        peaks.append(meter.peak_mb)
        calls.append(sum(p.calls for p in probes))
    peaks = [p for p in peaks if p is not None]
    return {"walls": walls, "peak_mb": max(peaks, default=None), "calls": calls, "output": out}


def randomise_(module, seed: int = 0) -> None:
    """N(0, 1/fan_in) weights: the NCSN++ init zeroes some output convolutions, which would make
    the network's output, and every accuracy comparison made with it, trivial."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.ndim >= 2:
                noise = torch.randn(param.shape, generator=generator)
                param.copy_(noise / math.sqrt(param[0].numel()))


def model_config(kind: str, preset: str):
    """A score model (``kind="score"``), a Schrödinger bridge (``"bridge"``, the reference's
    SB-VE data-prediction model) or a StoRM model on one NCSN++ preset."""
    from ..config import ModelConfig, SamplerConfig

    net = bench_presets()[preset]
    if kind == "score":
        return ModelConfig(kind="score", backbone=replace(net, in_channels=4))
    if kind == "bridge":
        return ModelConfig(
            kind="bridge", backbone=replace(net, in_channels=4, out_scale_at="output"),
            sde={"name": "sbve", "k": 2.6, "c": 0.4}, loss_type="data_prediction",
            network_scaling=None, c_out="1", sampler=SamplerConfig(method="sb_ode", t_eps=1e-4),
        )  # fmt: skip
    return ModelConfig(  # the layout of audiodiff.quickfit.tiny_storm_config
        kind="storm",
        backbone=replace(net, in_channels=6),
        predictor=replace(net, in_channels=2, time_conditional=False),
        sampler=SamplerConfig(steps=5, corrector_steps=0),
    )


def build_bench_model(kind: str, preset: str, device, seed: int = 0):
    """(model, config, probes): random weights, every backbone wrapped by a NetworkProbe."""
    from ..checkpoint import build_model

    config = model_config(kind, preset)
    model = build_model(config)
    randomise_(model, seed)
    backbones = [m.backbone for m in model.modules() if hasattr(m, "backbone")]
    probes = [NetworkProbe(b, device.type) for b in backbones]
    return model.to(device).eval(), config, probes


@functools.lru_cache(maxsize=4)
def _speech_clip(seconds: float, rate: int):
    from ..ddsp import speech_like

    return speech_like(seconds, rate, seed=0)


def noisy_speech(seconds: float, count: int, rate: int = 16000) -> list:
    """``count`` noisy-speech waveforms (L,): a speech-like clip (a 2 s one repeated for longer
    signals) plus item-seeded white noise."""
    import torch

    clean = _speech_clip(min(seconds, 2.0), rate)
    clean = clean.repeat(math.ceil(seconds / 2.0))[: round(seconds * rate)]
    seeds = [torch.Generator().manual_seed(i) for i in range(count)]
    return [(clean + 0.03 * torch.randn(clean.shape, generator=g)).numpy() for g in seeds]
