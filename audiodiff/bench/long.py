"""Long signals: speed and peak memory of the Enhancer, chunked and unchunked, against length."""

from __future__ import annotations

import math

from .measure import build_bench_model, measure, noisy_speech

LONG_PRESET = "ncsnpp_tiny"


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
    from ..enhance import Enhancer

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
