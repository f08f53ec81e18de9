"""`audiodiff bench`: speed, real-time factor, throughput and peak memory of the inference paths.

Models get random weights from the NCSN++ presets (speed does not depend on the weights): an
SGMSE+ score model for ``score`` rows, a StoRM model laid out like
:func:`audiodiff.quickfit.tiny_storm_config` for ``storm`` and ``predictive`` rows. Every row times
:class:`audiodiff.Enhancer` end to end (waveform in, waveform out: STFT, sampler, iSTFT): one
warm-up run, then the median of ``--repeats`` runs; the backbones are wrapped to count the network
calls (NFE) of every timed run.

Per row of B items of S seconds each, with W the median wall seconds of one batch:
RTF = W / S (latency per second of one item), x_realtime = 1 / RTF, items_per_s = B / W,
audio_s_per_s = B·S / W, speedup_vs_b1 = items_per_s / items_per_s of the same row at B = 1.

Peak memory: see :mod:`.measure`.

Modules: :mod:`.measure` (probes, memory, inputs), :mod:`.speed` (the speed table),
:mod:`.reference` (the side-by-side with ``sgmse``), :mod:`.long` (long signals), :mod:`.report`
(metadata and tables); this one holds the command line. Importing the package is cheap (torch is
imported inside the functions): the CLI builds its parser from :func:`add_bench_parser`.
"""

from __future__ import annotations

import argparse
import json

from ..cli_options import (
    add_device_option,
    add_seed_option,
    add_threads_option,
    non_negative_int,
    positive_float,
    positive_int,
)
from .long import LONG_PRESET, long_rows
from .measure import (
    EXTRA_PRESETS,
    MemoryMeter,
    NetworkProbe,
    bench_presets,
    build_bench_model,
    measure,
    noisy_speech,
)
from .reference import reference_rows
from .report import collect, format_report, format_table
from .speed import Case, bench_case, plan_cases, speed_rows, steps_for

__all__ = [
    "EXTRA_PRESETS", "LONG_PRESET", "Case", "MemoryMeter", "NetworkProbe", "add_bench_parser",
    "bench_case", "bench_presets", "build_bench_model", "collect", "format_report", "format_table",
    "long_rows", "measure", "noisy_speech", "plan_cases", "reference_rows", "resolve", "run_bench",
    "speed_rows", "steps_for",
]  # fmt: skip

MODES = ("score", "storm", "predictive", "bridge")  # bridge: a Schrödinger-bridge model, opt-in
METHODS = ("pc", "ode_euler", "ode_heun", "sb_ode", "sb_sde")  # sb_*: bridge rows only
DEFAULT_NFE = {"score": 10, "storm": 6, "bridge": 5}  # score: N = 5 PC + 1 corrector; storm: 1 + N
QUICK_NFE = {"score": 2, "storm": 2, "bridge": 2}  # score: N = 1 PC + 1 corrector; storm: 1 + N
FULL = {"batch_sizes": [1, 2, 4, 8, 16], "seconds": 2.0, "repeats": 3, "presets": None}
QUICK = {"batch_sizes": [1, 2], "seconds": 1.0, "repeats": 1, "presets": ["ncsnpp_tiny"]}


def add_bench_parser(sub) -> argparse.ArgumentParser:
    """Add ``bench`` to an ``add_subparsers()`` object; it dispatches to :func:`run_bench`."""
    p = sub.add_parser("bench", help="time the inference paths (speed, RTF, memory)")
    add = p.add_argument
    add_device_option(p)
    add_threads_option(p)
    add_seed_option(p)
    add("--json", action="store_true", help="print one JSON document")
    add("--quick", action="store_true", help="the reduced CI form: tiny, 1 s, batch 1 and 2")
    add("--presets", nargs="+", help="NCSN++ presets (default: tiny, s; on CUDA also m, full)")
    add("--modes", nargs="+", choices=MODES, default=list(MODES[:3]),
        help="(default: storm score predictive; bridge needs a bridge model)")  # fmt: skip
    add("--methods", nargs="+", choices=METHODS, default=["pc"], help="(default: pc)")
    add("--batch-sizes", nargs="+", type=positive_int,
        help="items per batch (default: 1 2 4 8 16; quick: 1 2)")  # fmt: skip
    add("--nfe", nargs="+", type=positive_int,
        help="network calls per item (default: score 10, storm 6)")  # fmt: skip
    add("--corrector-steps", type=non_negative_int, default=1,
        help="corrector steps of the score mode's PC (default: %(default)s)")  # fmt: skip
    add("--seconds", type=positive_float, help="audio seconds per item (default: 2; quick: 1)")
    add("--repeats", type=positive_int,
        help="timed runs after one warm-up (default: 3; quick: 1)")  # fmt: skip
    add("--reference", action=argparse.BooleanOptionalAction, default=True,
        help="time the sgmse NCSN++ and PC sampler beside ours (default: on)")  # fmt: skip
    add("--reference-preset", help="NCSN++ layout of the reference (default: the first preset)")
    add("--reference-batch-sizes", nargs="+", type=positive_int, default=[1],
        help="(default: 1)")  # fmt: skip
    add("--bf16", action="store_true", help="also run every row with the network in bf16")
    add("--long", action="store_true", help="only the long-signal memory table")
    add("--long-seconds", nargs="+", type=positive_float, default=[10.0, 60.0, 600.0],
        help="signal lengths of the --long table (default: 10 60 600)")  # fmt: skip
    p.set_defaults(func=run_bench)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Command-line arguments -> a complete plan (defaults filled in, values checked)."""
    from ..enhance import pick_device

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
    return plan


def run_bench(args: argparse.Namespace) -> int:
    """``audiodiff bench``: measure, then print a table (or ``--json``); returns the exit code."""
    report = collect(resolve(args))
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0
