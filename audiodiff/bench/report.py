"""The report: where the numbers were taken, and the text tables."""

from __future__ import annotations

import os
import platform
import sys
import time

from .long import long_rows
from .measure import MemoryMeter
from .reference import reference_rows
from .speed import speed_rows


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

    from .. import __version__

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
