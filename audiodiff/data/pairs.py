"""Paired clean/noisy layouts: ``base/{train,valid,test}/{clean,noisy}/*.wav`` (VB-DMD / SGMSE+).

A pair is a file name present in both ``clean/`` and ``noisy/`` of a subset. :func:`find_pairs`
lists the pairs of one subset; :func:`check_pairs` checks names, lengths, sample rates and
channel counts of a whole layout and reports every problem, one line each, naming the file.
Checks read only file headers (soundfile), so they are fast on large corpora.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from audiodiff.audio import AudioError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
SUBSETS = ("train", "valid", "test")


def list_audio_files(folder: str | os.PathLike, suffixes=AUDIO_SUFFIXES) -> list[Path]:
    """Audio files (``.wav/.flac/.ogg`` by default, any case) under ``folder``, recursive, sorted.

    Raises FileNotFoundError if ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    suffixes = tuple(s.lower() for s in suffixes)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


@dataclass(frozen=True)
class Pair:
    """One clean/noisy pair; ``name`` is the path relative to ``clean/`` (posix, with suffix)."""

    name: str
    clean: Path
    noisy: Path


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one file."""

    frames: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


class PairingError(ValueError):
    """A layout with pairing problems; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} pairing problem(s):\n" + "\n".join(self.problems))


@dataclass
class PairReport:
    """What :func:`check_pairs` found: the pairs per subset and every problem (one line each)."""

    pairs: dict[str, list[Pair]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = ", ".join(f"{s}: {len(p)} pairs" for s, p in self.pairs.items()) or "no subsets"
        return f"{counts}; {len(self.problems)} problem(s)"


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Frames, rate and channels from the header; raises AudioError (one line naming the file)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioError(path, f"not a readable audio file ({reason})") from None
    if info.frames <= 0:
        raise AudioError(path, "contains no samples")
    return AudioInfo(int(info.frames), int(info.samplerate), int(info.channels))


def _names(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in list_audio_files(folder)}


def _match(base: Path, subset: str) -> tuple[list[Pair], list[str]]:
    """Pairs of one subset and the missing-partner / missing-folder problems."""
    clean_dir, noisy_dir = base / subset / "clean", base / subset / "noisy"
    missing = [f"{d}: no such folder" for d in (clean_dir, noisy_dir) if not d.is_dir()]
    if missing:
        return [], missing
    clean, noisy = _names(clean_dir), _names(noisy_dir)
    problems = [
        f"{subset}/clean/{n}: no partner in {subset}/noisy/" for n in clean if n not in noisy
    ]
    problems += [
        f"{subset}/noisy/{n}: no partner in {subset}/clean/" for n in noisy if n not in clean
    ]
    pairs = [Pair(n, clean[n], noisy[n]) for n in sorted(clean) if n in noisy]
    return pairs, problems


def find_pairs(base: str | os.PathLike, subset: str, *, strict: bool = True) -> list[Pair]:
    """Pairs of ``base/subset/{clean,noisy}``, sorted by name.

    A missing folder raises PairingError. With ``strict`` (default) so does a file without its
    partner, naming every such file; otherwise unpaired files are skipped. Files are not opened.
    """
    base = Path(base)
    missing = [
        f"{d}: no such folder"
        for d in (base / subset / "clean", base / subset / "noisy")
        if not d.is_dir()
    ]
    if missing:
        raise PairingError(missing)
    pairs, problems = _match(base, subset)
    if strict and problems:
        raise PairingError(problems)
    return pairs


def check_pair(pair: Pair, label: str = "", sample_rate: int | None = None) -> list[str]:
    """Problems of one pair (unreadable, rate, channels, length), one line each naming it."""
    label = label or pair.name
    infos: dict[str, AudioInfo] = {}
    problems = []
    for side, path in (("clean", pair.clean), ("noisy", pair.noisy)):
        try:
            infos[side] = audio_info(path)
        except AudioError as err:
            problems.append(f"{label}: unreadable {side} file {path} ({err.problem})")
    if problems:
        return problems
    clean, noisy = infos["clean"], infos["noisy"]
    if clean.sample_rate != noisy.sample_rate:
        problems.append(
            f"{label}: sample rate differs (clean {clean.sample_rate} Hz, "
            f"noisy {noisy.sample_rate} Hz)"
        )
    elif clean.frames != noisy.frames:
        problems.append(
            f"{label}: length differs (clean {clean.frames} samples, noisy {noisy.frames})"
        )
    if clean.channels != noisy.channels:
        problems.append(
            f"{label}: channel count differs (clean {clean.channels}, noisy {noisy.channels})"
        )
    if sample_rate is not None:
        for side, info in infos.items():
            if info.sample_rate != sample_rate:
                problems.append(
                    f"{label}: {side} rate {info.sample_rate} Hz, expected {sample_rate} Hz"
                )
    return problems


def check_pairs(
    base: str | os.PathLike,
    subsets: tuple[str, ...] | list[str] | None = None,
    *,
    sample_rate: int | None = None,
    strict: bool = False,
) -> PairReport:
    """Check a paired layout: names, lengths, rates, channel counts, readability.

    ``subsets`` defaults to those of train/valid/test that exist (none existing is a problem);
    subsets named explicitly must exist. ``sample_rate``, if given, is the rate every file must
    have. Returns a PairReport with one line per problem; with ``strict`` raises PairingError
    instead when there is any problem.
    """
    base = Path(base)
    report = PairReport()
    if subsets is None:
        subsets = [s for s in SUBSETS if (base / s).is_dir()]
        if not subsets:
            report.problems.append(f"{base}: none of {', '.join(SUBSETS)} found")
    for subset in subsets:
        pairs, problems = _match(base, subset)
        report.pairs[subset] = pairs
        report.problems += problems
        for pair in pairs:
            report.problems += check_pair(pair, f"{subset}/{pair.name}", sample_rate)
    if strict and report.problems:
        raise PairingError(report.problems)
    return report
