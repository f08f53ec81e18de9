"""Build or check a paired layout ``BASE/{train,valid,test}/{clean,noisy}/*.wav``.

Build:  python data_prep/prepare.py --clean DIR --noisy DIR --out BASE [--valid-fraction 0.1]
            [--test-fraction 0 | --subset train|valid|test] [--sample-rate 16000]
            [--multichannel mixdown|reject]
            [--split-by file|speaker] [--seed 0]
Check:  python data_prep/prepare.py --check BASE [--sample-rate 16000]

Clean and noisy files are matched by their path relative to DIR without the suffix. Every problem
(missing partner, length / channel mismatch, unreadable or rejected multichannel file) is printed
on one line naming the file, and the exit status is 1; nothing is written unless ``--skip-bad``.
Files are mixed down to mono (or rejected), resampled with soxr, written atomically as WAV, and
``BASE/manifest.csv`` lists subset, name, seconds, sample rate and source paths. The split is a
seeded shuffle (of files, or of speakers = the name up to its first "_"), so reruns are identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import audiodiff  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm  # noqa: E402

from audiodiff.audio import AudioError, read_audio, resample, write_audio  # noqa: E402
from audiodiff.data.pairs import SUBSETS, audio_info, check_pairs, list_audio_files  # noqa: E402
from audiodiff.files import write_csv  # noqa: E402

MANIFEST_FIELDS = ("subset", "name", "seconds", "sample_rate", "clean_source", "noisy_source")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="prepare.py", description="Build or check a paired clean/noisy dataset layout."
    )
    p.add_argument("--clean", type=Path, help="folder of clean files (searched recursively)")
    p.add_argument("--noisy", type=Path, help="folder of noisy files with the same names")
    p.add_argument("--out", type=Path, help="BASE folder to create")
    p.add_argument("--check", type=Path, metavar="BASE", help="only check an existing layout")
    p.add_argument("--valid-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--multichannel", choices=("mixdown", "reject"), default="mixdown")
    p.add_argument("--split-by", choices=("file", "speaker"), default="file")
    p.add_argument(
        "--subset",
        choices=SUBSETS,
        help="put every pair into this subset, no split (e.g. test for an official test set)",
    )
    p.add_argument("--subtype", default="PCM_16", help="WAV subtype: PCM_16, PCM_24 or FLOAT")
    p.add_argument("--skip-bad", action="store_true", help="write the good pairs anyway")
    p.add_argument("--seed", type=int, default=0)
    return p


def _sources(folder: Path) -> tuple[dict[str, Path], list[str]]:
    """Files of ``folder`` keyed by relative path without suffix; duplicate keys are problems."""
    found: dict[str, Path] = {}
    problems = []
    for path in list_audio_files(folder):
        key = path.relative_to(folder).with_suffix("").as_posix()
        if key in found:
            problems.append(f"{path}: same name as {found[key]} (suffixes differ)")
        else:
            found[key] = path
    return found, problems


def validate_pair(key: str, clean: Path, noisy: Path, multichannel: str) -> list[str]:
    """Header checks of one source pair; one line per problem, naming the file."""
    try:
        c, n = audio_info(clean), audio_info(noisy)
    except AudioError as err:
        return [f"{key}: unreadable file {err}"]
    problems = []
    if c.channels != n.channels:
        problems.append(f"{key}: channel count differs (clean {c.channels}, noisy {n.channels})")
    if multichannel == "reject" and max(c.channels, n.channels) > 1:
        problems.append(f"{key}: multichannel ({c.channels}/{n.channels}); use --multichannel")
    same_rate = c.sample_rate == n.sample_rate
    if (same_rate and c.frames != n.frames) or (
        not same_rate and abs(c.seconds - n.seconds) > 1.0 / min(c.sample_rate, n.sample_rate)
    ):
        problems.append(
            f"{key}: length differs (clean {c.frames} samples at {c.sample_rate} Hz, "
            f"noisy {n.frames} at {n.sample_rate} Hz)"
        )
    return problems


def split_names(
    keys: list[str], valid_fraction: float, test_fraction: float, seed: int, by: str = "file"
) -> dict[str, str]:
    """Assign each key to train/valid/test by a seeded shuffle of files or speakers."""
    if not (0 <= valid_fraction < 1 and 0 <= test_fraction < 1):
        raise ValueError("--valid-fraction and --test-fraction must be in [0, 1)")

    def group(key: str) -> str:
        return Path(key).name.split("_")[0] if by == "speaker" else key

    groups = sorted({group(k) for k in keys})
    order = [groups[i] for i in np.random.default_rng(seed).permutation(len(groups))]
    counts = [
        max(1, round(f * len(groups))) if f > 0 else 0 for f in (test_fraction, valid_fraction)
    ]
    if sum(counts) >= len(groups) and sum(counts) > 0:
        raise ValueError(
            f"{len(groups)} {by}(s) are too few for valid {valid_fraction} and test {test_fraction}"
        )
    subset_of = {g: "test" for g in order[: counts[0]]}
    subset_of.update({g: "valid" for g in order[counts[0] : counts[0] + counts[1]]})
    return {k: subset_of.get(group(k), "train") for k in keys}


def _load(path: Path, sample_rate: int) -> np.ndarray:
    audio, rate = read_audio(path)
    return resample(audio.mean(axis=0), rate, sample_rate)  # (C, L) -> (L,) at the target rate


def write_pair(key: str, pair: tuple[Path, Path], subset: str, args) -> dict:
    """Read, mix down, resample and write one pair; returns its manifest row."""
    clean, noisy = (_load(path, args.sample_rate) for path in pair)
    length = min(clean.shape[-1], noisy.shape[-1])  # equal, or 1 apart after resampling
    name = f"{key}.wav"
    for side, audio in (("clean", clean), ("noisy", noisy)):
        out = args.out / subset / side / name
        write_audio(out, audio[:length], args.sample_rate, subtype=args.subtype)
    return {
        "subset": subset,
        "name": name,
        "seconds": f"{length / args.sample_rate:.4f}",
        "sample_rate": args.sample_rate,
        "clean_source": str(pair[0]),
        "noisy_source": str(pair[1]),
    }


def write_manifest(path: Path, rows: list[dict], fields=MANIFEST_FIELDS) -> None:
    """Write rows as CSV atomically (temp file, then rename)."""
    write_csv(path, rows, fields)


def find_source_pairs(args) -> tuple[dict[str, tuple[Path, Path]], list[str]]:
    """Match clean and noisy sources by name and validate them; (pairs, problems)."""
    clean, problems = _sources(args.clean)
    noisy, more = _sources(args.noisy)
    problems += more
    problems += [f"{clean[k]}: no partner in {args.noisy}" for k in clean if k not in noisy]
    problems += [f"{noisy[k]}: no partner in {args.clean}" for k in noisy if k not in clean]
    pairs = {}
    for key in sorted(k for k in clean if k in noisy):
        found = validate_pair(key, clean[key], noisy[key], args.multichannel)
        problems += found
        if not found:
            pairs[key] = (clean[key], noisy[key])
    return pairs, problems


def build(args) -> int:
    for folder in (args.clean, args.noisy):
        if not folder.is_dir():
            print(f"error: {folder}: no such folder", file=sys.stderr)
            return 2
    taken = [args.out / s for s in SUBSETS if (args.out / s).exists()]
    if taken:
        print(f"error: {taken[0]} exists; choose an empty --out", file=sys.stderr)
        return 2
    pairs, problems = find_source_pairs(args)
    for line in problems:
        print(line, file=sys.stderr)
    if problems and not args.skip_bad:
        print(f"{len(problems)} problem(s); nothing written (--skip-bad writes the rest)")
        return 1
    try:
        if args.subset:
            subset_of = dict.fromkeys(pairs, args.subset)
        else:
            subset_of = split_names(
                list(pairs), args.valid_fraction, args.test_fraction, args.seed, args.split_by
            )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = []
    for key in tqdm(sorted(pairs, key=lambda k: (SUBSETS.index(subset_of[k]), k)), disable=None):
        try:
            rows.append(write_pair(key, pairs[key], subset_of[key], args))
        except AudioError as err:
            problems.append(f"{key}: unreadable file {err}")
            print(problems[-1], file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    write_manifest(args.out / "manifest.csv", rows)
    counts = {s: sum(r["subset"] == s for r in rows) for s in SUBSETS}
    print(f"wrote {len(rows)} pairs to {args.out} {counts}; {len(problems)} problem(s)")
    return 1 if problems else 0


def check(args) -> int:
    report = check_pairs(args.check, sample_rate=args.sample_rate)
    for line in report.problems:
        print(line, file=sys.stderr)
    print(f"{args.check}: {report.summary()}")
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check is not None:
        return check(args)
    if args.clean is None or args.noisy is None or args.out is None:
        parser.error("give --clean, --noisy and --out (or --check BASE)")
    return build(args)


if __name__ == "__main__":
    sys.exit(main())
