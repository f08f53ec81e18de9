"""`audiodiff eval`: score enhanced files against clean references, and the noisy inputs.

    audiodiff eval --clean DIR --enhanced DIR [--noisy DIR] [--out REPORT_DIR] [--jobs N]

Files pair by path relative to each folder (``a/b.wav`` also matches ``a/b.flac``). A missing,
unreadable or mismatched file (rate, length beyond a tolerance) is named in one line and skipped;
the exit code is then 1. The report folder gets ``per_file.csv``, ``summary.json`` (mean and 95 %
Student-t CI of every metric, counts, paired deltas against the noisy input), ``summary.md`` and
PNG plots (with matplotlib); every file is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import warnings
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from .audio import AudioError, read_audio
from .cli_options import add_threads_option, non_negative_float, positive_int
from .files import atomic_write
from .metrics import DNSMOS_KEYS, METRICS, compute_metrics, dnsmos_available, input_snr, mean_ci95

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
DNSMOS = tuple(DNSMOS_KEYS.values())
LABELS = {
    "pesq": "PESQ-WB",
    "estoi": "ESTOI",
    "si_sdr": "SI-SDR (dB)",
    "input_snr": "input SNR (dB)",
}
LABELS.update({m: "DNSMOS " + m.split("_")[1].upper() for m in DNSMOS})


@dataclass(frozen=True)
class Pair:
    """One clean reference (named by its relative path) and the files scored against it."""

    name: str
    clean: Path
    enhanced: Path
    noisy: Path | None = None


@dataclass
class Outcome:
    """The metrics row of a pair, or the one-line reason it was skipped; notes are warnings."""

    row: dict | None
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


def audio_files(folder: Path) -> dict[Path, Path]:
    """Audio files under ``folder`` (recursive): {relative path: path}."""
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    return {p.relative_to(folder): p for p in files if p.is_file()}


def _counterpart(relative: Path, files: dict[Path, Path], stems: dict[Path, list[Path]]):
    """The file with the same relative path, else the same stem with another audio suffix."""
    if relative in files:
        return files[relative]
    candidates = stems.get(relative.with_suffix(""), [])
    return candidates[0] if candidates else None


def _stems(files: dict[Path, Path]) -> dict[Path, list[Path]]:
    """{relative path without suffix: [paths]} of ``audio_files``' result."""
    stems: dict[Path, list[Path]] = {}
    for relative, path in files.items():
        stems.setdefault(relative.with_suffix(""), []).append(path)
    return stems


def match_pairs(
    clean_dir: Path, enhanced_dir: Path, noisy_dir: Path | None = None
) -> tuple[list[Pair], list[str]]:
    """Pair every clean file with its enhanced (and noisy) file; name what is missing or extra."""
    clean = audio_files(clean_dir)
    enhanced = audio_files(enhanced_dir)
    noisy = audio_files(noisy_dir) if noisy_dir is not None else {}
    enhanced_stems, noisy_stems = _stems(enhanced), _stems(noisy)
    pairs, problems, used = [], [], set()
    for relative, clean_path in clean.items():
        enhanced_path = _counterpart(relative, enhanced, enhanced_stems)
        noisy_path = _counterpart(relative, noisy, noisy_stems)
        if enhanced_path is None:
            problems.append(f"missing enhanced file: {enhanced_dir / relative} (for {clean_path})")
        elif noisy_dir is not None and noisy_path is None:
            problems.append(f"missing noisy file: {noisy_dir / relative} (for {clean_path})")
        else:
            pairs.append(Pair(relative.as_posix(), clean_path, enhanced_path, noisy_path))
        if enhanced_path is not None:
            used.add(enhanced_path)
    for path in enhanced.values():
        if path not in used:
            problems.append(f"no clean reference for enhanced file: {path}")
    return pairs, problems


def _mono(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (samples,) float64, averaging the channels."""
    return audio.astype(np.float64).mean(axis=0)


def _load_pair(pair: Pair, tolerance: float) -> tuple[list[np.ndarray], int]:
    """Read clean, enhanced (and noisy) as mono, equal-length; AudioError names a bad file."""
    clean, rate = read_audio(pair.clean)
    signals = [clean]
    for path in (pair.enhanced, pair.noisy):
        if path is None:
            continue
        audio, other_rate = read_audio(path)
        if other_rate != rate:
            raise AudioError(path, f"rate mismatch: {other_rate} Hz, {pair.clean} is {rate} Hz")
        difference = abs(audio.shape[-1] - clean.shape[-1])
        if difference > round(tolerance * rate):
            raise AudioError(
                path,
                f"length mismatch: {audio.shape[-1]} samples, {pair.clean} has "
                f"{clean.shape[-1]} (tolerance {tolerance:g} s)",
            )
        signals.append(audio)
    length = min(s.shape[-1] for s in signals)
    return [_mono(s[..., :length]) for s in signals], rate


def evaluate_pair(pair: Pair, tolerance: float = 0.02, with_dnsmos: bool = False) -> Outcome:
    """Metrics of one pair: enhanced vs clean, and with a noisy file its input SNR and scores."""
    try:
        signals, rate = _load_pair(pair, tolerance)
    except AudioError as err:
        return Outcome(None, str(err))
    clean, enhanced = signals[0], signals[1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            row = {
                "file": pair.name,
                **compute_metrics(clean, enhanced, rate, with_dnsmos=with_dnsmos),
            }
            if pair.noisy is not None:
                noisy = signals[2]
                row["input_snr"] = input_snr(clean, noisy)
                noisy_scores = compute_metrics(clean, noisy, rate, with_dnsmos=with_dnsmos)
                row.update({f"noisy_{k}": v for k, v in noisy_scores.items()})
        except (ValueError, RuntimeError, ArithmeticError) as err:  # e.g. a PESQ internal error
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            return Outcome(None, f"{pair.enhanced}: cannot be scored ({reason})")
    notes = [f"{pair.name}: {w.message}" for w in caught if issubclass(w.category, RuntimeWarning)]
    return Outcome(row, None, notes)


def evaluate_pairs(
    pairs: list[Pair],
    *,
    jobs: int = 1,
    tolerance: float = 0.02,
    with_dnsmos: bool = False,
    progress: bool = True,
) -> list[Outcome]:
    """``evaluate_pair`` over all pairs; outcomes in input order.

    ``jobs`` > 1 uses spawned worker processes, so a script calling this needs the usual
    ``if __name__ == "__main__":`` guard.
    """
    from tqdm import tqdm

    work = partial(evaluate_pair, tolerance=tolerance, with_dnsmos=with_dnsmos)
    # disable=None: a bar only on a terminal, so logs and pipes get no carriage-return updates
    bar = partial(
        tqdm, total=len(pairs), desc="eval", unit="file", disable=None if progress else True
    )
    if jobs <= 1 or len(pairs) <= 1:
        return list(bar(map(work, pairs)))
    with ProcessPoolExecutor(min(jobs, len(pairs)), mp_context=get_context("spawn")) as pool:
        return list(bar(pool.map(work, pairs)))


def metric_columns(rows: list[dict]) -> list[str]:
    """The numeric columns present in ``rows``, in report order."""
    order = [*METRICS, "input_snr", *(f"noisy_{m}" for m in METRICS), *DNSMOS]
    order += [f"noisy_{m}" for m in DNSMOS]
    present = {k for row in rows for k in row if k != "file"}
    return [c for c in order if c in present] + sorted(present.difference(order))


def _stats(values: Iterable[float]) -> dict:
    values = np.asarray(list(values), dtype=np.float64)
    mean, low, high = mean_ci95(values)
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "n": int(np.isfinite(values).sum())}


def summarise(rows: list[dict], skipped: list[str], notes: Iterable[str] = ()) -> dict:
    """Mean and 95 % CI of every metric, paired deltas (enhanced − noisy), counts, skipped files."""
    columns = metric_columns(rows)
    deltas = {
        m: _stats(row[m] - row[f"noisy_{m}"] for row in rows)
        for m in (*METRICS, *DNSMOS)
        if m in columns and f"noisy_{m}" in columns
    }
    return {
        "counts": {
            "evaluated": len(rows),
            "skipped": len(skipped),
            "nan": {c: int(sum(math.isnan(row[c]) for row in rows)) for c in columns},
        },
        "metrics": {c: _stats(row[c] for row in rows) for c in columns},
        "deltas_vs_noisy": deltas,
        "skipped": list(skipped),
        "notes": list(notes),
    }


def write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def json_safe(value):
    """NaN (an undefined score or interval) -> None, i.e. JSON null, recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def per_file_csv(rows: list[dict]) -> str:
    """The rows as CSV: ``file``, then each metric column (6 decimals, ``nan`` if undefined)."""
    columns = metric_columns(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file", *columns])
    for row in rows:
        writer.writerow([row["file"], *(f"{row.get(c, math.nan):.6f}" for c in columns)])
    return buffer.getvalue()


def _cell(stats: dict | None, digits: int) -> str:
    if stats is None or math.isnan(stats["mean"]):
        return "–"
    if math.isnan(stats["ci95_low"]):
        return f"{stats['mean']:.{digits}f}"
    mean, low, high = (f"{stats[k]:.{digits}f}" for k in ("mean", "ci95_low", "ci95_high"))
    return f"{mean} [{low}, {high}]"


def summary_markdown(summary: dict, title: str = "audiodiff eval") -> str:
    """A markdown table: metric, enhanced, noisy, delta (mean [95 % CI]) and n."""
    metrics, deltas = summary["metrics"], summary["deltas_vs_noisy"]
    counts = summary["counts"]
    lines = [
        f"# {title}",
        "",
        f"{counts['evaluated']} files evaluated, {counts['skipped']} skipped. "
        "Cells: mean [95 % Student-t CI].",
        "",
        "| metric | enhanced | noisy input | Δ enhanced − noisy | n |",
        "|---|---|---|---|---|",
    ]
    for metric, reason in summary.get("metrics_skipped", {}).items():
        lines.insert(3, f"{metric} was not computed: {reason}.")
    for m in (*METRICS, *DNSMOS, "input_snr"):
        if m not in metrics:
            continue
        digits = 3 if m == "estoi" else 2
        enhanced = None if m == "input_snr" else metrics[m]
        noisy = metrics["input_snr"] if m == "input_snr" else metrics.get(f"noisy_{m}")
        lines.append(
            f"| {LABELS[m]} | {_cell(enhanced, digits)} | {_cell(noisy, digits)} | "
            f"{_cell(deltas.get(m), digits)} | {metrics[m]['n']} |"
        )
    if summary.get("spectrograms"):
        lines += [
            "",
            f"spectrograms.png shows {', '.join(summary['spectrograms'])}: {EXAMPLES_RULE}.",
        ]
    if summary["skipped"]:
        lines += ["", "## Skipped", "", *(f"- {line}" for line in summary["skipped"])]
    if summary["notes"]:
        lines += ["", "## Notes", "", *(f"- {line}" for line in summary["notes"])]
    return "\n".join(lines) + "\n"


def dnsmos_skip_reason(asked: bool) -> str:
    """Why DNSMOS is missing from a report, in words a user can act on."""
    if asked:
        return "--no-dnsmos was given"
    return "speechmos and onnxruntime are not installed (pip install 'audiodiff[eval]')"


def _save_figure(figure, path: Path) -> None:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)


def plot_distributions(rows: list[dict], path: Path) -> None:
    """Box plots (with the points) of each metric, noisy input beside enhanced when known."""
    import matplotlib.pyplot as plt

    shown = [m for m in (*METRICS, "dnsmos_ovrl") if m in rows[0]]
    figure, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.6), squeeze=False)
    jitter = np.random.default_rng(0)
    for ax, m in zip(axes[0], shown):
        groups = [("noisy", f"noisy_{m}"), ("enhanced", m)]
        groups = [(label, key) for label, key in groups if key in rows[0]]
        data = [np.array([r[key] for r in rows if not math.isnan(r[key])]) for _, key in groups]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(groups) + 1), [label for label, _ in groups])
        for i, values in enumerate(data, start=1):
            ax.scatter(i + jitter.uniform(-0.12, 0.12, len(values)), values, s=8, alpha=0.4)
        ax.set_title(LABELS[m])
        ax.grid(alpha=0.3)
    figure.tight_layout()
    _save_figure(figure, path)


def plot_improvement(rows: list[dict], path: Path) -> None:
    """Scatter of each metric's improvement over the noisy input against the input SNR."""
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(METRICS), figsize=(10, 3.4))
    snr = np.array([r["input_snr"] for r in rows])
    for ax, m in zip(axes, METRICS):
        ax.scatter(snr, [r[m] - r[f"noisy_{m}"] for r in rows], s=12, alpha=0.7)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel(LABELS["input_snr"])
        ax.set_ylabel(f"Δ {LABELS[m]}")
        ax.grid(alpha=0.3)
    figure.suptitle("improvement over the noisy input")
    figure.tight_layout()
    _save_figure(figure, path)


def log_spectrogram(audio: np.ndarray, n_fft: int = 512, hop: int = 128) -> np.ndarray:
    """|STFT|² in dB, (bins, frames), periodic Hann window."""
    padded = np.pad(audio, (n_fft // 2, n_fft // 2))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]  # (T, n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(frames * window, axis=-1)) ** 2  # (T, bins)
    return 10 * np.log10(power.T + 1e-12)


EXAMPLES_RULE = "the files of lowest, median and highest input SNR (or enhanced PESQ)"


def example_pairs(rows: list[dict], pairs: list[Pair], count: int = 3) -> list[Pair]:
    """Three examples: lowest, median and highest input SNR (or enhanced PESQ without noisy)."""
    by_name = {p.name: p for p in pairs}
    key = "input_snr" if "input_snr" in rows[0] else "pesq"
    ranked = sorted(rows, key=lambda r: -math.inf if math.isnan(r[key]) else r[key])
    picks = sorted({round(i * (len(ranked) - 1) / max(count - 1, 1)) for i in range(count)})
    return [by_name[ranked[i]["file"]] for i in picks]


def plot_spectrograms(examples: list[Pair], path: Path, tolerance: float = 0.02) -> None:
    """Noisy / enhanced / clean spectrograms of a few pairs, one row each, 80 dB range."""
    import matplotlib.pyplot as plt

    columns = (
        ["noisy", "enhanced", "clean"] if examples[0].noisy is not None else ["enhanced", "clean"]
    )
    figure, axes = plt.subplots(
        len(examples),
        len(columns),
        figsize=(4 * len(columns) + 1, 2.6 * len(examples) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for ax_row, pair in zip(axes, examples):
        signals, rate = _load_pair(pair, tolerance)  # clean, enhanced[, noisy]
        by_name = dict(zip(["clean", "enhanced", "noisy"], signals))
        specs = {name: log_spectrogram(by_name[name]) for name in columns}
        top = max(s.max() for s in specs.values())
        for ax, name in zip(ax_row, columns):
            seconds = by_name[name].shape[-1] / rate
            extent = (0.0, seconds, 0.0, rate / 2000)
            image = ax.imshow(
                specs[name],
                origin="lower",
                aspect="auto",
                extent=extent,
                vmin=top - 80,
                vmax=top,
                cmap="magma",
            )
            ax.set_title(f"{pair.name}: {name}", fontsize=9)
            ax.set_xlabel("time (s)")
            ax.set_ylabel("frequency (kHz)")
        figure.colorbar(image, ax=list(ax_row), label="power (dB)", pad=0.01)
    figure.suptitle(f"{', '.join(p.name for p in examples)}: {EXAMPLES_RULE}", fontsize=10)
    _save_figure(figure, path)


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("note: matplotlib is not installed, so no plots (pip install 'audiodiff[eval]')")
        return False
    return True


def write_report(
    out_dir: Path,
    rows: list[dict],
    summary: dict,
    pairs: list[Pair],
    *,
    plots: bool = True,
    title: str = "audiodiff eval",
) -> list[Path]:
    """Write per_file.csv, summary.json, summary.md and the PNG plots; returns the paths."""
    out_dir = Path(out_dir)
    written = [out_dir / "per_file.csv", out_dir / "summary.json", out_dir / "summary.md"]
    plots = plots and bool(rows) and _has_matplotlib()
    examples = example_pairs(rows, pairs) if plots else []
    if examples:
        summary = {**summary, "spectrograms": [p.name for p in examples]}
    write_text(written[0], per_file_csv(rows))
    write_text(written[1], json.dumps(json_safe(summary), indent=2) + "\n")
    write_text(written[2], summary_markdown(summary, title))
    if not plots:
        return written
    import matplotlib

    matplotlib.use("Agg")
    plot_distributions(rows, out_dir / "distributions.png")
    written.append(out_dir / "distributions.png")
    if "input_snr" in rows[0]:
        plot_improvement(rows, out_dir / "improvement_vs_snr.png")
        written.append(out_dir / "improvement_vs_snr.png")
    plot_spectrograms(examples, out_dir / "spectrograms.png")
    written.append(out_dir / "spectrograms.png")
    return written


def add_eval_parser(sub) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand to an argparse subparsers object; it runs ``run_eval``."""
    parser = sub.add_parser("eval", help="score enhanced files against clean references")
    parser.add_argument(
        "--clean", required=True, metavar="DIR", help="folder of clean reference files"
    )
    parser.add_argument(
        "--enhanced", required=True, metavar="DIR", help="folder of enhanced files (same names)"
    )
    parser.add_argument(
        "--noisy", metavar="DIR", help="folder of the noisy inputs: adds input SNR and deltas"
    )
    parser.add_argument(
        "--out", metavar="REPORT_DIR", help="report folder (default: <enhanced>_eval beside it)"
    )
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help="worker processes (default: %(default)s)",
    )
    add_threads_option(parser)
    parser.add_argument(
        "--length-tolerance",
        type=non_negative_float,
        metavar="SECONDS",
        default=0.02,
        help="seconds two paired files may differ in length; they are trimmed to the shorter "
        "(default: %(default)s)",
    )
    parser.add_argument("--no-dnsmos", action="store_true", help="skip DNSMOS even if installed")
    parser.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    """``audiodiff eval``: exit 0 if every file was scored, 1 if some were skipped or none was
    scored (then no report is written), 2 on misuse."""
    folders = {"clean": args.clean, "enhanced": args.enhanced, "noisy": args.noisy}
    for label, folder in folders.items():
        if folder is not None and not Path(folder).is_dir():
            print(f"error: --{label} {folder}: no such folder", file=sys.stderr)
            return 2
    clean_dir, enhanced_dir = Path(args.clean), Path(args.enhanced)
    noisy_dir = Path(args.noisy) if args.noisy else None
    pairs, skipped = match_pairs(clean_dir, enhanced_dir, noisy_dir)
    with_dnsmos = not args.no_dnsmos and dnsmos_available()
    outcomes = evaluate_pairs(
        pairs,
        jobs=args.jobs,
        tolerance=args.length_tolerance,
        with_dnsmos=with_dnsmos,
        progress=not args.quiet,
    )
    rows = [o.row for o in outcomes if o.row is not None]
    skipped += [o.problem for o in outcomes if o.problem is not None]
    notes = [note for o in outcomes for note in o.notes]
    scored = [p for p, o in zip(pairs, outcomes) if o.row is not None]
    for line in skipped:
        print(f"skipped: {line}", file=sys.stderr)
    for line in notes:
        print(f"warning: {line}", file=sys.stderr)
    resolved = enhanced_dir.resolve()
    out_dir = Path(args.out) if args.out else resolved.parent / f"{resolved.name}_eval"
    summary = summarise(rows, skipped, notes)
    summary["folders"] = {k: str(Path(v).resolve()) for k, v in folders.items() if v is not None}
    summary["dnsmos"] = with_dnsmos
    if not with_dnsmos:
        summary["metrics_skipped"] = {"DNSMOS": dnsmos_skip_reason(args.no_dnsmos)}
    if not rows:  # a run that scored nothing has failed, whatever the reason
        found = "no pairs of files" if not pairs else f"none of {len(pairs)} pairs"
        where = f"--enhanced {args.enhanced}: {found} could be scored against --clean {args.clean}"
        print(f"error: {where}; no report written", file=sys.stderr)
        return 1
    write_report(out_dir, rows, summary, scored, plots=not args.no_plots)
    print(summary_markdown(summary), end="")
    print(f"report written to {out_dir}")
    return 1 if skipped else 0
