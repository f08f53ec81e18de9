"""Simulate noisy/clean training pairs from clean speech, noise and (optionally) RIRs.

python data_prep/simulate.py --clean DIR --noise DIR [--rir DIR] --out BASE --count N
    [--snr -5 20] [--gain -6 6] [--reverb-prob 0.5] [--rir-source measured|ddsp] [--rt60 0.2 0.8]
    [--max-rt60 1.0] [--target dry|early] [--subset train] [--seconds 4] [--seed 0]

Writes ``BASE/SUBSET/{clean,noisy}/SUBSET_000000.wav ...`` atomically and
``BASE/SUBSET/manifest.csv`` (per file: sources and offsets, requested and realised SNR, gain,
reverb, RIR file or DDSP RT60/DRR). Mixtures come from
:class:`audiodiff.data.datasets.OnTheFlyMixDataset`: pair i is a function of (seed, subset, i), so
a rerun with the same arguments writes byte-identical files; the subset name picks the random
stream, so train and valid drawn with one seed differ (give them different speakers, though).
If gain pushes a peak above 0.999, clean and noisy are scaled down together (``clip_guard_db``).
"""

from __future__ import annotations

import argparse
import math
import sys
import zlib
from pathlib import Path

try:
    import audiodiff  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from audiodiff.audio import write_audio  # noqa: E402
from audiodiff.data.datasets import MixConfig, OnTheFlyMixDataset  # noqa: E402
from audiodiff.data.pairs import list_audio_files  # noqa: E402
from audiodiff.files import write_csv  # noqa: E402

MANIFEST_FIELDS = (
    "name", "seconds", "clean_source", "clean_offset", "noise_source", "noise_offset", "snr_db",
    "realised_snr_db", "gain_db", "clip_guard_db", "reverb", "rir", "rt60_s", "drr_db", "target",
)  # fmt: skip
PEAK_LIMIT = 0.999


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="simulate.py", description=__doc__.splitlines()[0])
    p.add_argument("--clean", type=Path, nargs="+", required=True, help="clean speech folder(s)")
    p.add_argument("--noise", type=Path, nargs="+", required=True, help="noise folder(s)")
    p.add_argument("--rir", type=Path, nargs="*", default=[], help="measured RIR folder(s)")
    p.add_argument("--out", type=Path, required=True, help="BASE folder")
    p.add_argument("--count", type=int, required=True, help="number of pairs to write")
    p.add_argument("--snr", type=float, nargs=2, default=(-5.0, 20.0), metavar=("LO", "HI"))
    p.add_argument("--gain", type=float, nargs=2, default=(-6.0, 6.0), metavar=("LO", "HI"))
    p.add_argument("--reverb-prob", type=float, default=0.0)
    p.add_argument("--rir-source", choices=("measured", "ddsp"), default="measured")
    p.add_argument("--rt60", type=float, nargs=2, default=(0.2, 0.8), metavar=("LO", "HI"))
    p.add_argument("--drr", type=float, nargs=2, default=(0.0, 10.0), metavar=("LO", "HI"))
    p.add_argument("--max-rt60", type=float, default=None, help="drop measured RIRs above this")
    p.add_argument("--target", choices=("dry", "early"), default="dry")
    p.add_argument("--early-ms", type=float, default=50.0)
    p.add_argument("--subset", default="train")
    p.add_argument("--seconds", type=float, default=4.0, help="length; 0 = whole utterances")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--subtype", default="PCM_16", help="WAV subtype: PCM_16, PCM_24 or FLOAT")
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise")
    p.add_argument("--seed", type=int, default=0)
    return p


def _files(folders: list[Path]) -> list[Path]:
    return [f for folder in folders for f in list_audio_files(folder)]


def make_dataset(args) -> OnTheFlyMixDataset:
    """The on-the-fly mixer configured from the command line (ValueError on bad settings)."""
    config = MixConfig(
        snr_db=tuple(args.snr),
        gain_db=tuple(args.gain),
        reverb_prob=args.reverb_prob,
        rir_source=args.rir_source,
        rt60_s=tuple(args.rt60),
        drr_db=tuple(args.drr),
        max_rt60_s=args.max_rt60,
        target=args.target,
        early_ms=args.early_ms,
        sample_rate=args.sample_rate,
    )
    if args.count < 1 or args.seconds < 0:
        raise ValueError("--count must be positive and --seconds >= 0")
    crop = round(args.seconds * args.sample_rate) or None
    rirs = _files(args.rir) if args.rir_source == "measured" else []
    return OnTheFlyMixDataset(
        _files(args.clean),
        _files(args.noise),
        rirs,
        config=config,
        crop_samples=crop,
        epoch_size=args.count,
        seed=args.seed,
        on_error=args.on_error,
    )


def subset_stream(subset: str) -> int:
    """The dataset "epoch" used for a subset: a fixed hash of its name."""
    return zlib.crc32(subset.encode("utf-8")) & 0x7FFFFFFF


def write_manifest(path: Path, rows: list[dict], fields=MANIFEST_FIELDS) -> None:
    """Write rows as CSV atomically (temp file, then rename)."""
    write_csv(path, rows, fields)


def _fmt(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def write_item(dataset: OnTheFlyMixDataset, index: int, args) -> dict:
    """Draw, clip-guard and write pair ``index``; returns its manifest row."""
    item = dataset.mix(index, epoch=subset_stream(args.subset))
    peak = max(float(np.max(np.abs(item.noisy))), float(np.max(np.abs(item.target))))
    guard = min(1.0, PEAK_LIMIT / peak) if peak > 0 else 1.0
    name = f"{args.subset}_{index:06d}.wav"
    for side, audio in (("clean", item.target), ("noisy", item.noisy)):
        out = args.out / args.subset / side / name
        write_audio(out, audio * np.float32(guard), args.sample_rate, subtype=args.subtype)
    return {
        "name": name,
        "seconds": f"{item.noisy.shape[-1] / args.sample_rate:.4f}",
        "clean_source": item.clean_file,
        "clean_offset": item.clean_offset,
        "noise_source": item.noise_file,
        "noise_offset": item.noise_offset,
        "snr_db": _fmt(item.snr_db),
        "realised_snr_db": _fmt(item.realised_snr_db),
        "gain_db": _fmt(item.gain_db),
        "clip_guard_db": _fmt(20 * math.log10(guard)),
        "reverb": item.reverb,
        "rir": item.rir_file,
        "rt60_s": _fmt(item.rt60_s),
        "drr_db": _fmt(item.drr_db),
        "target": args.target if item.reverb != "none" else "dry",
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    subset_dir = args.out / args.subset
    if any((subset_dir / side).exists() for side in ("clean", "noisy")):
        print(f"error: {subset_dir} already has clean/ or noisy/; choose another", file=sys.stderr)
        return 2
    try:
        dataset = make_dataset(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [write_item(dataset, i, args) for i in tqdm(range(args.count), disable=None)]
    write_manifest(subset_dir / "manifest.csv", rows)
    reverbed = sum(r["reverb"] != "none" for r in rows)
    print(f"wrote {len(rows)} pairs to {subset_dir} ({reverbed} reverberant)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
