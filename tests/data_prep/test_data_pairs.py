"""Tests of paired-layout discovery and checking (names, lengths, rates, channels, readability)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.data.pairs import (
    Pair,
    PairingError,
    check_pairs,
    find_pairs,
    list_audio_files,
)

COMMITTED = Path(__file__).resolve().parents[1] / "data"  # tests/data/pairs/{clean,noisy}


def write_wav(path: Path, n: int = 1600, rate: int = 16000, channels: int = 1, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.random.default_rng(seed).uniform(-0.3, 0.3, (n, channels)).astype(np.float32)
    sf.write(str(path), audio, rate)


def make_layout(base: Path, names=("a.wav", "b.wav", "c.wav"), subset: str = "train") -> Path:
    for i, name in enumerate(names):
        write_wav(base / subset / "clean" / name, seed=i)
        write_wav(base / subset / "noisy" / name, seed=100 + i)
    return base


def test_list_audio_files_is_recursive_sorted_and_filtered(tmp_path):
    for rel in ("b.wav", "a.FLAC", "sub/c.ogg", "notes.txt", "sub/d.mp3"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in list_audio_files(tmp_path)] == [
        "a.FLAC",
        "b.wav",
        "sub/c.ogg",
    ]
    with pytest.raises(FileNotFoundError, match="missing"):
        list_audio_files(tmp_path / "missing")


def test_find_pairs_matches_names(tmp_path):
    base = make_layout(tmp_path)
    pairs = find_pairs(base, "train")
    assert [p.name for p in pairs] == ["a.wav", "b.wav", "c.wav"]
    assert pairs[1] == Pair("b.wav", base / "train/clean/b.wav", base / "train/noisy/b.wav")


def test_find_pairs_on_the_committed_pairs():
    pairs = find_pairs(COMMITTED, "pairs")
    assert [p.name for p in pairs] == ["p287_001.wav", "p287_002.wav"]
    report = check_pairs(COMMITTED, ["pairs"], sample_rate=16000)
    assert report.ok, report.problems


def test_find_pairs_names_a_missing_partner(tmp_path):
    base = make_layout(tmp_path)
    (base / "train/noisy/b.wav").unlink()
    write_wav(base / "train/noisy/extra.wav")
    with pytest.raises(PairingError) as info:
        find_pairs(base, "train")
    assert "b.wav" in str(info.value) and "extra.wav" in str(info.value)
    assert len(info.value.problems) == 2
    assert [p.name for p in find_pairs(base, "train", strict=False)] == ["a.wav", "c.wav"]
    with pytest.raises(PairingError, match="no such folder"):
        find_pairs(base, "valid", strict=False)


def _missing_partner(base):
    (base / "train/noisy/b.wav").unlink()


def _length(base):
    write_wav(base / "train/noisy/b.wav", n=1599)


def _rate(base):
    write_wav(base / "train/noisy/b.wav", rate=8000)


def _channels(base):
    write_wav(base / "train/noisy/b.wav", channels=2)


def _unreadable(base):
    (base / "train/noisy/b.wav").write_text("not audio\n" * 10)


def _empty(base):
    (base / "train/clean/b.wav").write_bytes(b"")


@pytest.mark.parametrize(
    "damage,phrase",
    [
        (_missing_partner, "no partner"),
        (_length, "length differs"),
        (_rate, "sample rate differs"),
        (_channels, "channel count differs"),
        (_unreadable, "unreadable noisy file"),
        (_empty, "unreadable clean file"),
    ],
)
def test_each_mismatch_is_caught_and_names_the_file(tmp_path, damage, phrase):
    base = make_layout(tmp_path)
    assert check_pairs(base).ok
    damage(base)
    report = check_pairs(base)
    assert not report.ok
    assert len(report.problems) == 1, report.problems
    line = report.problems[0]
    assert phrase in line and "b.wav" in line and "\n" not in line
    with pytest.raises(PairingError) as info:
        check_pairs(base, strict=True)
    assert "b.wav" in str(info.value) and phrase in str(info.value)


def test_report_lists_every_problem_across_subsets(tmp_path):
    base = make_layout(tmp_path)
    make_layout(base, names=("v1.wav", "v2.wav"), subset="valid")
    _length(base)
    write_wav(base / "valid/noisy/v2.wav", rate=22050)
    (base / "valid/clean/v1.wav").unlink()
    report = check_pairs(base)
    assert set(report.pairs) == {"train", "valid"}
    text = "\n".join(report.problems)
    assert len(report.problems) == 3
    assert "train/b.wav: length differs" in text
    assert "valid/v2.wav: sample rate differs" in text
    assert "valid/noisy/v1.wav: no partner" in text


def test_expected_sample_rate_is_enforced(tmp_path):
    base = make_layout(tmp_path)
    report = check_pairs(base, sample_rate=8000)
    assert len(report.problems) == 6  # clean and noisy of three pairs
    assert all("expected 8000 Hz" in line for line in report.problems)


def test_a_base_without_subsets_is_a_problem(tmp_path):
    report = check_pairs(tmp_path)
    assert not report.ok and str(tmp_path) in report.problems[0]
    report = check_pairs(tmp_path, ["train"])
    assert any("no such folder" in line for line in report.problems)
