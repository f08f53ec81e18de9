"""Metrics against their reference packages and closed forms; ``audiodiff eval`` end to end."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pesq
import pytest
import soundfile as sf
from pystoi import stoi
from scipy import stats

from audiodiff.audio import resample
from audiodiff.evaluate import add_eval_parser
from audiodiff.metrics import (
    compute_metrics,
    estoi,
    input_snr,
    mean_ci95,
    pesq_wb,
    si_sdr,
)

PAIRS = Path(__file__).resolve().parent / "data" / "pairs"
NAMES = ("p287_001.wav", "p287_002.wav")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def load(kind: str, name: str) -> np.ndarray:
    """A test pair file as float32, read here with soundfile (independently of audiodiff)."""
    audio, rate = sf.read(str(PAIRS / kind / name), dtype="float32")
    assert rate == 16000
    return audio


@pytest.mark.parametrize("name", NAMES)
def test_pesq_and_estoi_equal_the_reference_packages(name):
    clean, noisy = load("clean", name), load("noisy", name)
    expected_pesq = pesq.pesq(16000, clean, noisy, "wb")
    expected_estoi = stoi(clean, noisy, 16000, extended=True)
    assert pesq_wb(clean, noisy, 16000) == pytest.approx(expected_pesq, abs=1e-6)
    assert estoi(clean, noisy, 16000) == pytest.approx(expected_estoi, abs=1e-9)
    scores = compute_metrics(clean, noisy, 16000)
    assert set(scores) == {"pesq", "estoi", "si_sdr"}
    assert scores["pesq"] == pytest.approx(expected_pesq, abs=1e-6)
    assert 1.0 < expected_pesq < 4.0 and 0.3 < expected_estoi < 1.0  # a real noisy pair


def test_pesq_resamples_other_rates_to_16k():
    clean, noisy = load("clean", NAMES[0]), load("noisy", NAMES[0])
    at_16k = pesq_wb(clean, noisy, 16000)
    at_48k = pesq_wb(resample(clean, 16000, 48000), resample(noisy, 16000, 48000), 48000)
    assert at_48k == pytest.approx(at_16k, abs=0.03)


def test_pesq_gives_nan_with_a_warning_where_it_cannot_score(monkeypatch):
    clean = load("clean", NAMES[0])
    with pytest.warns(RuntimeWarning, match="silent"):
        assert math.isnan(pesq_wb(clean, np.zeros_like(clean), 16000))

    def no_utterances(*args, **kwargs):
        raise pesq.NoUtterancesError(b"No utterances detected")

    monkeypatch.setattr(pesq, "pesq", no_utterances)
    with pytest.warns(RuntimeWarning, match="No utterances detected"):
        assert math.isnan(pesq_wb(clean, clean, 16000))


def test_si_sdr_closed_forms():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(64000)
    assert si_sdr(s, 0.3 * s) > 100  # a scaled copy is perfect
    # noise orthogonal to the (zero-mean) reference: SI-SDR = SNR exactly, at any scale
    s = s - s.mean()
    n = rng.standard_normal(64000)
    n -= n.mean()
    n -= np.dot(n, s) / np.dot(s, s) * s
    n *= np.linalg.norm(s) / np.linalg.norm(n) * 10 ** (-7.5 / 20)  # 7.5 dB
    assert si_sdr(s, s + n) == pytest.approx(7.5, abs=1e-9)
    assert si_sdr(s, -4.0 * (s + n)) == pytest.approx(7.5, abs=1e-9)
    assert input_snr(s, s + n) == pytest.approx(7.5, abs=1e-9)
    # independent noise at a known SNR: SI-SDR ≈ that SNR
    noise = rng.standard_normal(64000)
    noise *= np.linalg.norm(s) / np.linalg.norm(noise) * 10 ** (-3.0 / 20)
    assert si_sdr(s, s + noise) == pytest.approx(3.0, abs=0.1)
    assert input_snr(s, s + noise) == pytest.approx(3.0, abs=1e-9)
    with pytest.raises(ValueError, match="shape mismatch"):
        si_sdr(s, s[:-1])


def test_mean_ci95_matches_scipy_t_interval():
    values = np.random.default_rng(1).normal(2.0, 0.7, 23)
    mean, low, high = mean_ci95(values)
    expected = stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=stats.sem(values))
    assert mean == pytest.approx(values.mean())
    assert (low, high) == pytest.approx(expected, abs=1e-12)
    assert mean_ci95(np.append(values, np.nan)) == pytest.approx((mean, low, high))
    one = mean_ci95([3.0])
    assert one[0] == 3.0 and math.isnan(one[1]) and math.isnan(one[2])
    assert all(math.isnan(v) for v in mean_ci95([]))


def make_eval_tree(root: Path) -> dict[str, tuple[Path, Path, Path]]:
    """clean/enhanced/noisy folders: four scored pairs (one FLAC, one nested and 100 samples
    short, one silent) plus a missing, a length-mismatched, a rate-mismatched and an orphan file."""
    for kind in ("clean", "noisy", "enhanced"):
        (root / kind / "sub").mkdir(parents=True)
    good = {"p287_001.wav": NAMES[0], "p287_002.wav": NAMES[1], "sub/p287_004.wav": NAMES[1]}
    good["silent.wav"] = NAMES[0]
    bad = {"missing.wav": NAMES[0], "short.wav": NAMES[0], "rate.wav": NAMES[1]}
    for target, source in {**good, **bad}.items():
        shutil.copy(PAIRS / "clean" / source, root / "clean" / target)
        shutil.copy(PAIRS / "noisy" / source, root / "noisy" / target)
    noisy_1, noisy_2 = load("noisy", NAMES[0]), load("noisy", NAMES[1])
    sf.write(root / "enhanced" / "p287_001.flac", noisy_1, 16000)  # another suffix
    shutil.copy(PAIRS / "noisy" / NAMES[1], root / "enhanced" / "p287_002.wav")
    sf.write(root / "enhanced" / "sub" / "p287_004.wav", noisy_2[:-100], 16000)  # within 20 ms
    sf.write(root / "enhanced" / "short.wav", noisy_1[:-8000], 16000)  # 0.5 s short
    sf.write(root / "enhanced" / "rate.wav", noisy_2[::2], 8000)
    sf.write(root / "enhanced" / "orphan.wav", noisy_1, 16000)
    sf.write(root / "enhanced" / "silent.wav", np.zeros_like(noisy_1), 16000)
    return {name: (root / "clean" / name, root / "noisy" / name) for name in good}


def direct_scores(clean_path: Path, noisy_path: Path, enhanced: str = "noisy", trim=None) -> dict:
    """The scores computed here with pesq/pystoi; the enhanced file is the noisy one, or zeros."""
    clean = sf.read(str(clean_path), dtype="float32")[0][:trim]
    noisy = sf.read(str(noisy_path), dtype="float32")[0][:trim]
    residual = noisy.astype(np.float64) - clean
    value = {
        "input_snr": 10 * np.log10(np.sum(clean.astype(np.float64) ** 2) / np.sum(residual**2)),
        "noisy_pesq": pesq.pesq(16000, clean, noisy, "wb"),
        "noisy_estoi": stoi(clean, noisy, 16000, extended=True),
        "noisy_si_sdr": si_sdr(clean, noisy),
    }
    if enhanced == "noisy":
        value.update({k: value[f"noisy_{k}"] for k in ("pesq", "estoi", "si_sdr")})
    else:
        zeros = np.zeros_like(clean)
        # pystoi's ESTOI of silence is not deterministic: numerical noise within ±0.01 of 0
        value.update(pesq=math.nan, estoi=stoi(clean, zeros, 16000, extended=True), si_sdr=0.0)
    return value


def run_cli(argv: list[str]) -> int:
    """``audiodiff eval`` through its own parser (cli.py wires the same two functions)."""
    parser = argparse.ArgumentParser(prog="audiodiff")
    add_eval_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_cli_end_to_end(tmp_path, capsys):
    files = make_eval_tree(tmp_path)
    out = tmp_path / "report"
    argv = ["eval", "--clean", str(tmp_path / "clean"), "--enhanced", str(tmp_path / "enhanced")]
    argv += ["--noisy", str(tmp_path / "noisy"), "--out", str(out), "--jobs", "2"]
    code = run_cli([*argv, "--no-dnsmos", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    skipped = [line for line in err.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == 4, err
    assert "warning: silent.wav: PESQ: a signal is silent; returning NaN" in err
    assert any("missing enhanced file" in s and "missing.wav" in s for s in skipped)
    assert any("length mismatch" in s and "short.wav" in s for s in skipped)
    assert any("rate mismatch" in s and "rate.wav" in s for s in skipped)
    assert any("no clean reference" in s and "orphan.wav" in s for s in skipped)

    with (out / "per_file.csv").open(newline="") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(files)
    expected = {
        name: direct_scores(
            *paths,
            enhanced="zeros" if name == "silent.wav" else "noisy",
            trim=-100 if name.startswith("sub/") else None,
        )
        for name, paths in files.items()
    }
    for name, scores in expected.items():
        for key, value in scores.items():
            tolerance = 0.03 if (name, key) == ("silent.wav", "estoi") else 2e-6
            got = float(rows[name][key])
            assert got == pytest.approx(value, abs=tolerance, nan_ok=True), f"{name} {key}"

    summary = json.loads((out / "summary.json").read_text())
    assert {"counts", "metrics", "deltas_vs_noisy", "skipped", "notes"} <= set(summary)
    assert summary["counts"]["evaluated"] == 4 and summary["counts"]["skipped"] == 4
    assert summary["counts"]["nan"]["pesq"] == 1 and summary["counts"]["nan"]["estoi"] == 0
    for key in ("pesq", "estoi", "si_sdr", "input_snr", "noisy_pesq"):
        values = [scores[key] for scores in expected.values()]
        mean, low, high = mean_ci95(values)
        got = summary["metrics"][key]
        assert got["n"] == (3 if key == "pesq" else 4)
        assert (got["mean"], got["ci95_low"], got["ci95_high"]) == pytest.approx(
            (mean, low, high), abs=1e-5 if key != "estoi" else 0.03
        )
    assert summary["deltas_vs_noisy"]["pesq"]["mean"] == pytest.approx(0.0, abs=1e-12)
    markdown = (out / "summary.md").read_text()
    assert "PESQ-WB" in markdown
    assert "DNSMOS was not computed: --no-dnsmos was given." in markdown
    assert summary["metrics_skipped"] == {"DNSMOS": "--no-dnsmos was given"}
    shown = summary["spectrograms"]  # the files the spectrogram figure shows, named in summary.md
    assert len(shown) == 3 and set(shown) <= set(expected)
    assert f"spectrograms.png shows {', '.join(shown)}" in markdown
    for png in ("distributions.png", "improvement_vs_snr.png", "spectrograms.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_eval_cli_rejects_a_missing_folder(tmp_path, capsys):
    code = run_cli(["eval", "--clean", str(tmp_path / "nope"), "--enhanced", str(tmp_path)])
    assert code == 2
    assert "nope" in capsys.readouterr().err
