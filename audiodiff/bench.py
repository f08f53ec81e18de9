"""`audiodiff bench`: speed, real-time factor, throughput and peak memory of the inference paths.

Models get random weights from the NCSN++ presets (speed does not depend on the weights): an
SGMSE+ score model for ``score`` rows, a StoRM model laid out like
:func:`audiodiff.demo.demo_config` for ``storm`` and ``predictive`` rows. Every row times
:class:`audiodiff.Enhancer` end to end (waveform in, waveform out: STFT, sampler, iSTFT): one
warm-up run, then the median of ``--repeats`` runs; the backbones are wrapped to count the network
calls (NFE) of every timed run.

Per row of B items of S seconds each, with W the median wall seconds of one batch:
RTF = W / S (latency per second of one item), x_realtime = 1 / RTF, items_per_s = B / W,
audio_s_per_s = B·S / W, speedup_vs_b1 = items_per_s / items_per_s of the same row at B = 1.

Peak memory is the increase over what was in use when a timed run started. CUDA:
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensors only). CPU: the
resident set size from /proc/self/statm, sampled by a background thread every 2 ms, after
``malloc_trim(0)`` has handed freed heap back to the OS (so memory freed by earlier runs does not
hide this one's); spikes shorter than 2 ms can be missed.

Importing this module is cheap (torch is imported inside the functions): the CLI builds its
parser from :func:`add_bench_parser`.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace

MODES = ("score", "storm", "predictive")
METHODS = ("pc", "ode_euler", "ode_heun")
DEFAULT_NFE = {"score": 10, "storm": 6}  # score: N = 5 PC + 1 corrector; storm: 1 + N = 5
QUICK_NFE = {"score": 2, "storm": 2}  # score: N = 1 PC + 1 corrector; storm: 1 + N = 1
FULL = {"batch_sizes": [1, 2, 4, 8, 16], "seconds": 2.0, "repeats": 3, "presets": None}
QUICK = {"batch_sizes": [1, 2], "seconds": 1.0, "repeats": 1, "presets": ["ncsnpp_tiny"]}
SNR, T_EPS = 0.5, 0.03
LONG_PRESET = "ncsnpp_tiny"
EXTRA_PRESETS: dict = {}  # name -> NCSNppConfig, benchmarkable next to the library's PRESETS


def bench_presets() -> dict:
    """The library's NCSN++ presets plus any registered in ``EXTRA_PRESETS``."""
    from .nets import PRESETS

    return {**PRESETS, **EXTRA_PRESETS}


@dataclass(frozen=True)
class Case:
    """One benchmark configuration (one row per precision)."""

    preset: str
    mode: str
    method: str
    steps: int
    corrector_steps: int
    nfe: int
    batch: int
    seconds: float
    precision: str = "fp32"

    def overrides(self) -> dict:
        """Keyword arguments of ``Enhancer.__call__`` for this case."""
        if self.mode == "predictive":
            return {"mode": "predictive"}
        names = ("mode", "method", "steps", "corrector_steps")
        return {name: getattr(self, name) for name in names}


def steps_for(mode: str, method: str, nfe: int, corrector_steps: int) -> tuple[int, int] | None:
    """(steps N, corrector steps) that spend exactly ``nfe`` evaluations, or None if none do.

    NFE: PC N·(C + 1), ODE Euler N, ODE Heun 2(N - 1) + 1 (see :mod:`audiodiff.sampling`); StoRM
    adds one predictor pass and runs without corrector, the score mode's PC uses
    ``corrector_steps``.
    """
    budget = nfe - 1 if mode == "storm" else nfe
    corrector = corrector_steps if mode == "score" and method == "pc" else 0
    if method == "pc":
        steps, spent = budget // (corrector + 1), (budget // (corrector + 1)) * (corrector + 1)
    elif method == "ode_euler":
        steps, spent = budget, budget
    else:
        steps = (budget + 1) // 2
        spent = 2 * (steps - 1) + 1
    return (steps, corrector) if steps >= 1 and spent == budget else None


# -- measuring ------------------------------------------------------------------------------------


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


def _sync(device) -> None:
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
            _sync(device)
            start = time.perf_counter()
            out = fn()
            _sync(device)
            walls.append(time.perf_counter() - start)
        peaks.append(meter.peak_mb)
        calls.append(sum(p.calls for p in probes))
    peaks = [p for p in peaks if p is not None]
    return {"walls": walls, "peak_mb": max(peaks, default=None), "calls": calls, "output": out}


# -- models and inputs ----------------------------------------------------------------------------


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
    """A score model (``kind="score"``) or a StoRM model on one NCSN++ preset."""
    from .config import ModelConfig, SamplerConfig

    net = bench_presets()[preset]
    if kind == "score":
        return ModelConfig(kind="score", backbone=replace(net, in_channels=4))
    return ModelConfig(  # the layout of audiodiff.demo.demo_config
        kind="storm",
        backbone=replace(net, in_channels=6),
        predictor=replace(net, in_channels=2, time_conditional=False),
        sampler=SamplerConfig(steps=5, corrector_steps=0),
    )


def build_bench_model(kind: str, preset: str, device, seed: int = 0):
    """(model, config, probes): random weights, every backbone wrapped by a NetworkProbe."""
    from .checkpoint import build_model

    config = model_config(kind, preset)
    model = build_model(config)
    randomise_(model, seed)
    backbones = [m.backbone for m in model.modules() if hasattr(m, "backbone")]
    probes = [NetworkProbe(b, device.type) for b in backbones]
    return model.to(device).eval(), config, probes


@functools.lru_cache(maxsize=4)
def _speech_clip(seconds: float, rate: int):
    from .ddsp import speech_like

    return speech_like(seconds, rate, seed=0)


def noisy_speech(seconds: float, count: int, rate: int = 16000) -> list:
    """``count`` noisy-speech waveforms (L,): a speech-like clip (a 2 s one repeated for longer
    signals) plus item-seeded white noise."""
    import torch

    clean = _speech_clip(min(seconds, 2.0), rate)
    clean = clean.repeat(math.ceil(seconds / 2.0))[: round(seconds * rate)]
    seeds = [torch.Generator().manual_seed(i) for i in range(count)]
    return [(clean + 0.03 * torch.randn(clean.shape, generator=g)).numpy() for g in seeds]


# -- the speed table ------------------------------------------------------------------------------


def plan_cases(plan, preset: str, mode: str) -> list[Case]:
    """The rows of one (preset, mode): every NFE x method x batch size that can be run."""
    if mode == "predictive":
        settings, budgets = [("-", 0, 0, 1)], []
    else:
        settings, budgets = [], plan.nfe or [plan.nfe_defaults[mode]]
    for nfe in budgets:
        for method in plan.methods:
            found = steps_for(mode, method, nfe, plan.corrector_steps)
            if found is None:
                print(f"bench: no {mode}/{method} setting spends NFE {nfe}", file=sys.stderr)
            else:
                settings.append((method, *found, nfe))
    return [
        Case(preset, mode, method, steps, corrector, nfe, batch, plan.seconds)
        for method, steps, corrector, nfe in settings
        for batch in plan.batch_sizes
    ]


def bench_case(enhancer, probes, case: Case, waves, plan) -> tuple[dict, list]:
    """Time one case; returns its row and the output of the last timed run."""
    batch = list(waves[: case.batch])
    enhancer.batch_size = case.batch
    for probe in probes:
        probe.bf16 = case.precision == "bf16"
    try:
        result = measure(
            lambda: enhancer(batch, enhancer.sample_rate, seed=plan.seed, **case.overrides()),
            enhancer.device,
            plan.repeats,
            probes,
        )
    finally:
        for probe in probes:
            probe.bf16 = False
    wall = statistics.median(result["walls"])
    row = {"kind": "speed", **asdict(case), "nfe_counted": result["calls"][-1]}
    row.update(
        wall_s=wall, wall_all_s=result["walls"], ms_per_nfe=1e3 * wall / case.nfe,
        rtf=wall / case.seconds, x_realtime=case.seconds / wall, items_per_s=case.batch / wall,
        audio_s_per_s=case.batch * case.seconds / wall, peak_mem_mb=result["peak_mb"],
        speedup_vs_b1=None, bf16_max_abs_diff=None, bf16_rel_diff=None,
    )  # fmt: skip
    return row, result["output"]


def speed_rows(plan) -> list[dict]:
    """Every row of the speed table, fp32 and (with ``--bf16``) bf16 next to each other."""
    import numpy as np

    from .enhance import Enhancer

    rows, waves = [], noisy_speech(plan.seconds, max(plan.batch_sizes))
    for preset in plan.presets:
        models = {}
        for mode in plan.modes:
            kind = "score" if mode == "score" else "storm"
            if kind not in models:
                models[kind] = build_bench_model(kind, preset, plan.device, plan.seed)
            model, config, probes = models[kind]
            enhancer = Enhancer(model, config, device=plan.device)
            for case in plan_cases(plan, preset, mode):
                row, fp32 = bench_case(enhancer, probes, case, waves, plan)
                rows.append(row)
                if plan.bf16:
                    bf16_case = replace(case, precision="bf16")
                    row, bf16 = bench_case(enhancer, probes, bf16_case, waves, plan)
                    diff = max(float(np.abs(a - b).max()) for a, b in zip(bf16, fp32))
                    scale = max(float(np.abs(b).max()) for b in fp32)
                    row.update(bf16_max_abs_diff=diff, bf16_rel_diff=diff / max(scale, 1e-30))
                    rows.append(row)
    fields = ("preset", "mode", "method", "steps", "corrector_steps", "seconds", "precision")
    single = {tuple(r[f] for f in fields): r for r in rows if r["batch"] == 1}
    for row in rows:
        base = single.get(tuple(row[f] for f in fields))
        if base is not None and row["batch"] > 1:
            row["speedup_vs_b1"] = row["items_per_s"] / base["items_per_s"]
    return rows


# -- the reference side by side -------------------------------------------------------------------


def reference_pair(preset: str, device, seed: int = 0):
    """(our ScoreModel, its probe, the reference sgmse NCSNpp), sharing one set of random weights.

    The reference network is built with the preset's layout and randomised; its weights are mapped
    onto ours by ``convert_reference_state_dict``. On a CUDA machine importing the reference
    compiles its upfirdn2d extension (needs nvcc and ninja), which takes minutes or fails.
    """
    from sgmse.backbones.ncsnpp import NCSNpp as ReferenceNCSNpp

    from .models import ScoreModel
    from .nets import build_backbone, convert_reference_state_dict
    from .sdes import build_sde

    cfg = replace(bench_presets()[preset], in_channels=4)
    layout = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "fourier_scale")
    reference = ReferenceNCSNpp(
        **{k: getattr(cfg, k) for k in layout},
        image_size=cfg.num_freqs,
        fir_kernel=list(cfg.fir_kernel),
    )
    randomise_(reference, seed)
    backbone = build_backbone(cfg)
    backbone.load_state_dict(convert_reference_state_dict(reference.state_dict(), cfg))
    ours = ScoreModel(backbone, build_sde(model_config("score", preset).sde))
    probe = NetworkProbe(backbone, device.type)
    return ours.to(device).eval(), probe, reference.to(device).eval()


def _samplers(ours, probe, reference, steps: int, corrector: int) -> dict:
    """name -> (y -> PC sample (reverse diffusion + ALD), NFE counter); noise from the global RNG
    in the same order on both sides, so equal seeds give equal noise."""
    import torch
    from sgmse.sampling import get_pc_sampler
    from sgmse.sdes import OUVESDE as ReferenceOUVESDE

    from .sampling import sample_pc, time_grid

    sde, ref_calls = ours.sde, [0]
    ref_sde = ReferenceOUVESDE(sde.theta, sde.sigma_min, sde.sigma_max, N=steps)

    def ref_score(x, y, t):  # sgmse ScoreModel.forward for the ncsnpp backbone
        ref_calls[0] += 1
        return -reference(torch.cat([x, y], dim=1), t)

    def run_ours(y):
        probe.calls = 0
        grid = time_grid(steps, T=sde.T, t_eps=T_EPS, device=y.device)
        return sample_pc(sde, ours, y, grid, corrector_steps=corrector, snr=SNR)

    def run_ref(y):
        ref_calls[0] = 0
        args = ("reverse_diffusion", "ald", ref_sde, ref_score, y)
        return get_pc_sampler(*args, eps=T_EPS, snr=SNR, corrector_steps=corrector)()[0]

    return {"ours": (run_ours, lambda: probe.calls), "ref": (run_ref, lambda: ref_calls[0])}


def reference_row(plan, pair, nfe: int, batch: int) -> dict:
    """Ours vs the reference at the same NFE and batch: same weights, same noise, alternating."""
    import numpy as np
    import torch

    from .spec import SpecConfig, Spectrogram

    ours, probe, reference = pair
    steps, corrector = steps_for("score", "pc", nfe, plan.corrector_steps)
    runs = _samplers(ours, probe, reference, steps, corrector)
    spec = Spectrogram(SpecConfig())
    y = spec.pad_frames(spec.analyse(torch.from_numpy(np.stack(noisy_speech(plan.seconds, batch)))))
    y = y.to(plan.device)
    x = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    x, t = x.to(plan.device), torch.full((batch,), 0.5, device=plan.device)
    walls, counts, outputs = {"ours": [], "ref": []}, {}, {}
    with torch.inference_mode():
        theirs = -reference(torch.cat([x, y], dim=1), t)  # the networks on one input
        net_diff = float((ours(x, y, t) - theirs).abs().max())
        for name, (run, _) in runs.items():  # the warm-up: both samplers, the same noise
            torch.manual_seed(plan.seed)
            outputs[name] = run(y)
        for r in range(plan.repeats):  # alternating, the first side swapped every repeat
            for name in ("ours", "ref") if r % 2 == 0 else ("ref", "ours"):
                torch.manual_seed(plan.seed + 1 + r)
                _sync(plan.device)
                start = time.perf_counter()
                runs[name][0](y)
                _sync(plan.device)
                walls[name].append(time.perf_counter() - start)
                counts[name] = runs[name][1]()
    ours_wall, ref_wall = statistics.median(walls["ours"]), statistics.median(walls["ref"])
    net_scale, sample_scale = float(theirs.abs().max()), float(outputs["ref"].abs().max())
    sample_diff = float((outputs["ours"] - outputs["ref"]).abs().max())
    rtol = 2e-2 if plan.device.type == "cuda" else 1e-3  # CUDA convolutions may run in TF32
    agree = net_diff <= rtol * net_scale and sample_diff <= rtol * sample_scale
    return {
        "kind": "reference", "preset": plan.reference_preset, "mode": "score", "method": "pc",
        "steps": steps, "corrector_steps": corrector, "nfe": nfe, "batch": batch,
        "seconds": plan.seconds, "frames": y.shape[-1], "nfe_counted_ours": counts["ours"],
        "nfe_counted_ref": counts["ref"], "ours_wall_s": ours_wall, "ref_wall_s": ref_wall,
        "ours_ms_per_nfe": 1e3 * ours_wall / nfe, "ref_ms_per_nfe": 1e3 * ref_wall / nfe,
        "ratio_ours_to_ref": ours_wall / ref_wall, "net_max_abs_diff": net_diff,
        "net_ref_max_abs": net_scale, "sample_max_abs_diff": sample_diff,
        "sample_ref_max_abs": sample_scale, "agree": agree,
    }  # fmt: skip


def reference_rows(plan) -> list[dict]:
    """Side-by-side rows for the score mode; one error row if the reference cannot be loaded."""
    try:
        pair = reference_pair(plan.reference_preset, plan.device, plan.seed)
    except Exception as err:  # noqa: BLE001 - any failure to import or build it is reported
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        return [{"kind": "reference", "preset": plan.reference_preset, "error": reason}]
    return [
        reference_row(plan, pair, nfe, batch)
        for nfe in plan.nfe or [plan.nfe_defaults["score"]]
        if steps_for("score", "pc", nfe, plan.corrector_steps) is not None
        for batch in plan.reference_batch_sizes
    ]


# -- long signals ---------------------------------------------------------------------------------


def _available_mb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**20
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) / 1024


def long_rows(plan) -> list[dict]:
    """Speed and peak memory of the Enhancer (tiny StoRM, predictive) on long synthetic signals,
    with its default chunking and batch size (equal-size chunks share a batch) and unchunked (one
    network pass over the whole signal).

    Nothing runs whose memory, extrapolated from the last measurement (a 1 s warm-up at first),
    exceeds half of what is available, so a shared machine is not pushed into swapping or the OOM
    killer: linear in the audio one batch holds when chunked; quadratic unchunked (the bottleneck
    attention is), where the lengths are climbed by doublings (rows marked ``intermediate``) so
    that no estimate reaches beyond 4x.
    """
    from .enhance import Enhancer

    model, config, probes = build_bench_model("storm", LONG_PRESET, plan.device, plan.seed)
    default_chunk, rows = Enhancer(model, config, device=plan.device).chunk_seconds, []
    for chunk in (default_chunk, None):
        enhancer = Enhancer(model, config, device=plan.device, chunk_seconds=chunk or 1e9)
        power, cap = (1, chunk * enhancer.batch_size) if chunk else (2, math.inf)
        warm = _long_run(enhancer, probes, 1.0)
        last = (1.0, max(warm.get("peak_mem_mb") or 0.0, 1.0))  # (seconds in a batch, MB)
        base = {"kind": "long", "preset": LONG_PRESET, "mode": "predictive", "chunk_seconds": chunk}
        for seconds in plan.long_seconds:
            targets = []
            while power == 2 and 2 * last[0] * 2 ** len(targets) < seconds:  # unchunked
                targets.append(2 * last[0] * 2 ** len(targets))  # climb by doublings
            for length in [*targets, seconds]:
                row = {**base, "seconds": length, "intermediate": length != seconds}
                row.update(_guarded_run(enhancer, probes, length, last, power, plan.device, cap))
                rows.append(row)
                if row["status"] != "ok":
                    break
                last = (min(length, cap), max(row["peak_mem_mb"], 1.0))
            if rows[-1]["seconds"] != seconds:  # a doubling was skipped, and so is this length
                status = f"skipped: {rows[-1]['seconds']:g} s was"
                rows.append({**base, "seconds": seconds, "intermediate": False, "status": status})
    return rows


def _guarded_run(enhancer, probes, seconds, last, power, device, cap=math.inf) -> dict:
    """``_long_run`` unless the extrapolated peak memory exceeds half of what is available."""
    estimate = 1.25 * last[1] * (min(seconds, cap) / last[0]) ** power + 0.5 * seconds
    if estimate > 0.5 * _available_mb(device):
        status = f"skipped: ~{estimate:.0f} MB estimated > half available"
        return {"estimated_peak_mb": estimate, "status": status}
    return {"estimated_peak_mb": estimate, **_long_run(enhancer, probes, seconds)}


def _long_run(enhancer, probes, seconds: float) -> dict:
    """One timed run of the predictive mode on ``seconds`` of audio."""
    import torch

    wave, rate = noisy_speech(seconds, 1)[0], enhancer.sample_rate
    try:
        run = lambda: enhancer(wave, rate, mode="predictive")  # noqa: E731
        result = measure(run, enhancer.device, 1, probes, warmup=False)
    except (MemoryError, torch.cuda.OutOfMemoryError, RuntimeError) as err:
        return {"status": f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120]}"}
    wall = result["walls"][0]
    return {"status": "ok", "wall_s": wall, "rtf": wall / seconds,
            "peak_mem_mb": result["peak_mb"], "nfe_counted": result["calls"][0]}  # fmt: skip


# -- report ---------------------------------------------------------------------------------------


def device_name(device) -> str:
    """The GPU's name, or the CPU model from /proc/cpuinfo."""
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def metadata(plan) -> dict:
    """Where and how the numbers were taken."""
    import torch

    from . import __version__

    try:  # without AVX512-BF16/AMX, CPU bf16 convolutions take a slow fallback
        if plan.device.type == "cuda":
            bf16 = torch.cuda.is_bf16_supported()
        else:
            bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        bf16 = None
    return {
        "device": str(plan.device), "device_name": device_name(plan.device),
        "torch": torch.__version__, "audiodiff": __version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "loadavg_start": list(os.getloadavg()), "memory_method": MemoryMeter.method(plan.device),
        "bf16_native": bf16, "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "quick": plan.quick, "repeats": plan.repeats, "seed": plan.seed,
    }  # fmt: skip


def collect(plan) -> dict:
    """Run what ``plan`` asks for: {"metadata", "rows", "reference", "long"}."""
    start = time.perf_counter()
    report = {"metadata": metadata(plan), "rows": [], "reference": [], "long": []}
    if plan.bf16 and not report["metadata"]["bf16_native"]:
        print("bench: no native bf16 here, so bf16 rows run a slow fallback", file=sys.stderr)
    if plan.long:
        report["long"] = long_rows(plan)
    else:
        report["rows"] = speed_rows(plan)
        if plan.reference:
            report["reference"] = reference_rows(plan)
    report["metadata"].update(loadavg_end=list(os.getloadavg()))
    report["metadata"].update(elapsed_s=time.perf_counter() - start)
    return report


# (header, key, format) of each table
SPEED_COLUMNS = [
    ("preset", "preset", ""), ("mode", "mode", ""), ("method", "method", ""), ("N", "steps", ""),
    ("C", "corrector_steps", ""), ("NFE", "nfe", ""), ("calls", "nfe_counted", ""),
    ("B", "batch", ""), ("audio_s", "seconds", ".3g"), ("prec", "precision", ""),
    ("wall_s", "wall_s", ".3g"), ("ms/NFE", "ms_per_nfe", ".4g"), ("RTF", "rtf", ".3g"),
    ("x_rt", "x_realtime", ".3g"), ("items/s", "items_per_s", ".3g"),
    ("audio_s/s", "audio_s_per_s", ".3g"), ("peak_MB", "peak_mem_mb", ".4g"),
    ("speedup", "speedup_vs_b1", ".3g"), ("bf16_diff", "bf16_max_abs_diff", ".2e"),
]  # fmt: skip
REFERENCE_COLUMNS = [
    ("preset", "preset", ""), ("N", "steps", ""), ("C", "corrector_steps", ""),
    ("NFE", "nfe", ""), ("B", "batch", ""), ("audio_s", "seconds", ".3g"),
    ("ours_ms/NFE", "ours_ms_per_nfe", ".4g"), ("ref_ms/NFE", "ref_ms_per_nfe", ".4g"),
    ("ours/ref", "ratio_ours_to_ref", ".3f"), ("net_diff", "net_max_abs_diff", ".2e"),
    ("sample_diff", "sample_max_abs_diff", ".2e"), ("sample_max", "sample_ref_max_abs", ".3g"),
    ("agree", "agree", ""), ("calls", "calls", ""),
]  # fmt: skip
LONG_COLUMNS = [
    ("preset", "preset", ""), ("mode", "mode", ""), ("audio_s", "seconds", ".4g"),
    ("chunk_s", "chunk_seconds", ".3g"), ("wall_s", "wall_s", ".3g"), ("RTF", "rtf", ".3g"),
    ("peak_MB", "peak_mem_mb", ".4g"), ("calls", "nfe_counted", ""), ("status", "status", ""),
]  # fmt: skip


def format_table(rows: list[dict], columns) -> str:
    """Fixed-width text table; missing values print as '-'."""

    def cell(value, spec):
        if value is None:
            return "-"
        return format(value, spec) if isinstance(value, float) else str(value)

    cells = [[cell(row.get(key), spec) for _, key, spec in columns] for row in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, (h, _, _) in enumerate(columns)]
    lines = [[h for h, _, _ in columns], *cells]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)


def format_report(report: dict) -> str:
    """The human-readable form of a report."""
    meta = report["metadata"]
    out = [
        f"audiodiff bench on {meta['device']} ({meta['device_name']}), torch {meta['torch']}, "
        f"{meta['threads']} threads; load average {meta['loadavg_start'][0]:.2f} at start, "
        f"{meta['loadavg_end'][0]:.2f} at end, {meta['cpu_count']} CPUs",
        f"RTF = wall / seconds of one item, x_rt = 1 / RTF; peak memory: {meta['memory_method']}",
    ]
    if report["rows"]:
        out += ["", format_table(report["rows"], SPEED_COLUMNS)]
        if any(r["precision"] == "bf16" for r in report["rows"]) and not meta["bf16_native"]:
            out.append("note: no native bf16 on this device; bf16 times are a slow fallback's")
    ok = [r for r in report["reference"] if "error" not in r]
    if ok:
        ok = [dict(r, calls=f"{r['nfe_counted_ours']}/{r['nfe_counted_ref']}") for r in ok]
        out += ["", "ours vs reference sgmse 0.1.2 (same weights and noise; ours/ref < 1: faster)"]
        out.append(format_table(ok, REFERENCE_COLUMNS))
    out += [f"reference: {r['error']}" for r in report["reference"] if "error" in r]
    if report["long"]:
        out += ["", "long signals (Enhancer, predictive mode)"]
        out.append(format_table(report["long"], LONG_COLUMNS))
    return "\n".join([*out, f"elapsed {meta['elapsed_s']:.1f} s"])


# -- command line ---------------------------------------------------------------------------------


def add_bench_parser(sub) -> argparse.ArgumentParser:
    """Add ``bench`` to an ``add_subparsers()`` object; it dispatches to :func:`run_bench`."""
    p = sub.add_parser("bench", help="time the inference paths (speed, RTF, memory)")
    add = p.add_argument
    add("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add("--json", action="store_true", help="print one JSON document")
    add("--quick", action="store_true", help="the reduced CI form: tiny, 1 s, batch 1 and 2")
    add("--presets", nargs="+", help="NCSN++ presets (default tiny, s; on CUDA also m, full)")
    add("--modes", nargs="+", choices=MODES, default=list(MODES))
    add("--methods", nargs="+", choices=METHODS, default=["pc"])
    add("--batch-sizes", nargs="+", type=int, help="default 1 2 4 8 16 (quick: 1 2)")
    add("--nfe", nargs="+", type=int, help="NFE per item (default: score 10, storm 6)")
    add("--corrector-steps", type=int, default=1, help="corrector steps of the score mode's PC")
    add("--seconds", type=float, help="audio seconds per item (default 2; quick 1)")
    add("--repeats", type=int, help="timed runs after one warm-up (default 3; quick 1)")
    add("--reference", action=argparse.BooleanOptionalAction, default=True,
        help="time the reference sgmse NCSN++ and PC sampler side by side")  # fmt: skip
    add("--reference-preset", help="NCSN++ layout of the reference (default: the first preset)")
    add("--reference-batch-sizes", nargs="+", type=int, default=[1])
    add("--bf16", action="store_true", help="also run every row with the network in bf16")
    add("--long", action="store_true", help="only the long-signal memory table")
    add("--long-seconds", nargs="+", type=float, default=[10.0, 60.0, 600.0])
    add("--threads", type=int, help="torch.set_num_threads before measuring")
    add("--seed", type=int, default=0)
    p.set_defaults(func=run_bench)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Command-line arguments -> a complete plan (defaults filled in, values checked)."""
    import torch

    from .enhance import pick_device

    plan = argparse.Namespace(**vars(args))
    plan.device = pick_device(args.device)
    defaults = QUICK if args.quick else FULL
    plan.nfe_defaults = QUICK_NFE if args.quick else DEFAULT_NFE
    for key, value in defaults.items():
        if getattr(plan, key) is None:
            setattr(plan, key, value)
    if plan.presets is None:
        big = ["ncsnpp_m", "ncsnpp"] if plan.device.type == "cuda" else []
        plan.presets = ["ncsnpp_tiny", "ncsnpp_s", *big]
    unknown = sorted(set(plan.presets) - set(bench_presets()))
    if unknown:
        raise ValueError(f"unknown presets {unknown}; known: {sorted(bench_presets())}")
    plan.reference_preset = plan.reference_preset or plan.presets[0]
    counts = [*plan.batch_sizes, *plan.reference_batch_sizes, *(plan.nfe or []), plan.repeats]
    if min(counts) < 1 or plan.seconds <= 0 or plan.corrector_steps < 0:
        raise ValueError("batch sizes, NFE and repeats must be >= 1 and seconds > 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    return plan


def run_bench(args: argparse.Namespace) -> int:
    """``audiodiff bench``: measure, then print a table (or ``--json``); returns the exit code."""
    report = collect(resolve(args))
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
