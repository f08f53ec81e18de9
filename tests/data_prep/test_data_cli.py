"""End-to-end tests of data_prep/prepare.py and data_prep/simulate.py on tiny synthetic folders."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.data.pairs import check_pairs

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(
        f"data_prep_{name}", ROOT / "data_prep" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


prepare = load_script("prepare")
simulate = load_script("simulate")


def write(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate)
    return path


def signal(n: int, seed: int, channels: int = 1) -> np.ndarray:
    audio = np.random.default_rng(seed).uniform(-0.3, 0.3, (n, channels)).astype(np.float32)
    return audio[:, 0] if channels == 1 else audio


@pytest.fixture
def user_pairs(tmp_path) -> Path:
    """Six pairs of two speakers, one at 8 kHz and one stereo, as a user might have them."""
    src = tmp_path / "src"
    for i, name in enumerate(["p1_001", "p1_002", "p1_003", "p2_001", "p2_002"]):
        write(src / f"clean/{name}.wav", signal(1600, i))
        write(src / f"noisy/{name}.wav", signal(1600, 50 + i))
    write(src / "clean/sub/p3_001.flac", signal(800, 7), rate=8000)
    write(src / "noisy/sub/p3_001.wav", signal(800, 57), rate=8000)
    write(src / "clean/p4_001.wav", signal(1600, 8, channels=2))
    write(src / "noisy/p4_001.wav", signal(1600, 58, channels=2))
    return src


def prepare_args(src: Path, out: Path, *extra: str) -> list[str]:
    return ["--clean", str(src / "clean"), "--noisy", str(src / "noisy"), "--out", str(out), *extra]


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def files_of(base: Path) -> dict[str, bytes]:
    return {
        p.relative_to(base).as_posix(): p.read_bytes()
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def test_prepare_builds_a_checked_layout_with_manifest(user_pairs, tmp_path):
    out = tmp_path / "base"
    assert prepare.main(prepare_args(user_pairs, out, "--valid-fraction", "0.3")) == 0
    report = check_pairs(out, sample_rate=RATE)
    assert report.ok, report.problems
    rows = read_rows(out / "manifest.csv")
    assert len(rows) == 7 and set(rows[0]) == set(prepare.MANIFEST_FIELDS)
    assert {r["subset"] for r in rows} == {"train", "valid"}
    assert sum(r["subset"] == "valid" for r in rows) == 2  # round(0.3 * 7)
    resampled = next(r for r in rows if r["name"] == "sub/p3_001.wav")
    assert resampled["seconds"] == "0.1000" and resampled["sample_rate"] == "16000"
    assert resampled["clean_source"].endswith("p3_001.flac")
    info = sf.info(str(out / resampled["subset"] / "clean/sub/p3_001.wav"))
    assert (info.samplerate, info.frames, info.channels) == (RATE, 1600, 1)
    stereo = next(r for r in rows if r["name"] == "p4_001.wav")
    assert sf.info(str(out / stereo["subset"] / "noisy/p4_001.wav")).channels == 1


def test_prepare_is_deterministic_under_seed(user_pairs, tmp_path):
    runs = []
    for seed, out in ((0, "a"), (0, "b"), (5, "c")):
        argv = prepare_args(
            user_pairs, tmp_path / out, "--valid-fraction", "0.4", "--seed", str(seed)
        )
        assert prepare.main(argv) == 0
        runs.append(files_of(tmp_path / out))
    assert runs[0] == runs[1]  # byte-identical files and manifest
    assert runs[0]["manifest.csv"] != runs[2]["manifest.csv"]  # another split


def test_prepare_splits_by_speaker(user_pairs, tmp_path):
    argv = prepare_args(
        user_pairs, tmp_path / "s", "--valid-fraction", "0.25", "--split-by", "speaker"
    )
    assert prepare.main(argv) == 0
    rows = read_rows(tmp_path / "s/manifest.csv")
    subsets = {}
    for r in rows:
        subsets.setdefault(Path(r["name"]).name.split("_")[0], set()).add(r["subset"])
    assert all(len(s) == 1 for s in subsets.values())  # no speaker in two subsets
    assert sum(s == {"valid"} for s in subsets.values()) == 1


def test_prepare_subset_puts_every_pair_into_one_subset(user_pairs, tmp_path):
    out = tmp_path / "official_test"
    assert prepare.main(prepare_args(user_pairs, out, "--subset", "test")) == 0
    rows = read_rows(out / "manifest.csv")
    assert len(rows) == 7 and {r["subset"] for r in rows} == {"test"}
    assert not (out / "train").exists()
    assert check_pairs(out).ok


@pytest.mark.parametrize(
    "damage,phrase",
    [
        (lambda src: (src / "noisy/p1_002.wav").unlink(), "no partner"),
        (lambda src: write(src / "noisy/p1_002.wav", signal(1500, 1)), "length differs"),
        (lambda src: write(src / "noisy/p1_002.wav", signal(1600, 1, 2)), "channel count differs"),
        (lambda src: (src / "clean/p1_002.wav").write_text("text"), "unreadable"),
    ],
)
def test_prepare_reports_a_mismatch_and_writes_nothing(
    user_pairs, tmp_path, capsys, damage, phrase
):
    damage(user_pairs)
    out = tmp_path / "base"
    assert prepare.main(prepare_args(user_pairs, out)) == 1
    err = capsys.readouterr().err
    assert "p1_002" in err and phrase in err
    assert not out.exists()
    assert prepare.main(prepare_args(user_pairs, out, "--skip-bad")) == 1
    assert len(read_rows(out / "manifest.csv")) == 6


def test_prepare_can_reject_multichannel(user_pairs, tmp_path, capsys):
    assert prepare.main(prepare_args(user_pairs, tmp_path / "m", "--multichannel", "reject")) == 1
    assert "p4_001" in capsys.readouterr().err


def test_check_exits_1_naming_the_mismatched_file(user_pairs, tmp_path, capsys):
    out = tmp_path / "base"
    assert prepare.main(prepare_args(user_pairs, out, "--valid-fraction", "0")) == 0
    assert prepare.main(["--check", str(out)]) == 0
    write(out / "train/noisy/p2_001.wav", signal(1599, 3))
    capsys.readouterr()
    assert prepare.main(["--check", str(out)]) == 1
    err = capsys.readouterr().err
    assert "train/p2_001.wav: length differs" in err and err.count("\n") == 1


def simulate_args(pool: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--clean", str(pool / "clean"), "--noise", str(pool / "noise"), "--rir", str(pool / "rir"),
        "--out", str(out), "--count", "4", "--seconds", "0.5", *extra,
    ]  # fmt: skip


@pytest.fixture
def pool(tmp_path) -> Path:
    root = tmp_path / "pool"
    for i in range(3):
        write(root / f"clean/c{i}.wav", signal(int(0.8 * RATE), i) * 0.5)
    write(root / "noise/n0.wav", np.random.default_rng(1).normal(0, 0.05, RATE))
    write(root / "noise/n1.flac", np.random.default_rng(2).normal(0, 0.05, 3000))
    rir = np.zeros(2000)
    rir[20], rir[300], rir[1500] = 0.9, 0.3, 0.1
    write(root / "rir/r0.wav", rir)
    return root


def test_simulate_writes_pairs_and_manifest_deterministically(pool, tmp_path):
    extra = ("--reverb-prob", "0.5", "--target", "early", "--snr", "0", "10", "--seed", "1")
    for out in ("a", "b"):
        assert simulate.main(simulate_args(pool, tmp_path / out, *extra)) == 0
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    assert a == b
    assert len([k for k in a if k.startswith("train/noisy/")]) == 4
    rows = read_rows(tmp_path / "a/train/manifest.csv")
    assert [r["name"] for r in rows] == [f"train_{i:06d}.wav" for i in range(4)]
    for r in rows:
        assert 0 <= float(r["snr_db"]) <= 10
        assert abs(float(r["realised_snr_db"]) - float(r["snr_db"])) < 0.1
        assert r["reverb"] in ("none", "measured") and (r["rir"] != "") == (r["reverb"] != "none")
    assert check_pairs(tmp_path / "a", ["train"], sample_rate=RATE).ok
    audio, rate = sf.read(str(tmp_path / "a/train/noisy/train_000000.wav"))
    assert rate == RATE and audio.shape == (8000,)
    assert simulate.main(simulate_args(pool, tmp_path / "c", *extra[:-1], "2")) == 0
    assert files_of(tmp_path / "c") != a


def test_simulate_dry_realised_snr_from_the_written_files(pool, tmp_path):
    out = tmp_path / "d"
    argv = simulate_args(pool, out, "--subtype", "FLOAT", "--subset", "valid", "--gain", "-3", "3")
    assert simulate.main(argv) == 0
    for r in read_rows(out / "valid/manifest.csv"):
        clean, _ = sf.read(str(out / "valid/clean" / r["name"]))
        noisy, _ = sf.read(str(out / "valid/noisy" / r["name"]))
        realised = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
        assert abs(realised - float(r["snr_db"])) < 0.1


def test_simulate_with_ddsp_reverb_and_existing_output(pool, tmp_path, capsys):
    out = tmp_path / "e"
    argv = simulate_args(
        pool, out, "--reverb-prob", "1", "--rir-source", "ddsp", "--rt60", "0.2", "0.3"
    )
    assert simulate.main(argv) == 0
    rows = read_rows(out / "train/manifest.csv")
    assert all(r["reverb"] == "ddsp" and 0.2 <= float(r["rt60_s"]) <= 0.3 for r in rows)
    assert simulate.main(argv) == 2  # refuses to write into an existing subset
    assert "already" in capsys.readouterr().err
    assert simulate.main(simulate_args(pool, tmp_path / "f", "--snr", "9", "1")) == 2
