"""eval/pool_valid.py: held-out pool mixtures and recorded pairs, the pairs scored independently."""

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audiodiff.audio import read_audio
from audiodiff.enhance import Enhancer
from audiodiff.metrics import compute_metrics

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "tests" / "data" / "pairs"
LINE = re.compile(r"predictive (\w+) \((\d+) files\): pesq (\S+) estoi (\S+) si_sdr (\S+)")


def read_mono(path: Path) -> tuple[np.ndarray, int]:
    audio, rate = read_audio(path)  # (channels, samples)
    return audio[0], rate


@pytest.fixture(scope="module")
def pool_valid(eval_script):
    return eval_script("pool_valid")


@pytest.fixture
def pool_argv(tmp_path) -> list[str]:
    """A recipe and overrides for a small pool made of the fixture pairs: their clean speech, and
    their noise (noisy - clean); one clean and one noise file are held out."""
    for folder in ("clean", "noise"):
        (tmp_path / folder).mkdir()
    for i, name in enumerate(sorted(p.name for p in (PAIRS / "clean").iterdir())):
        clean, rate = read_mono(PAIRS / "clean" / name)
        noisy, _ = read_mono(PAIRS / "noisy" / name)
        sf.write(tmp_path / "clean" / f"c{i}.wav", clean, rate)
        sf.write(tmp_path / "noise" / f"n{i}.wav", noisy - clean, rate)
    return [
        str(REPO / "recipes" / "pool" / "storm_tiny.yaml"), f"data.clean={tmp_path / 'clean'}",
        f"data.noise={tmp_path / 'noise'}", "data.rir=null", "data.mix.reverb_prob=0",
        "data.valid.holdout_clean=1", "data.valid.holdout_noise=1",
    ]  # fmt: skip


def test_pairs_are_scored_beside_the_mixtures_and_pooled(pool_valid, pool_argv, capsys):
    argv = [*pool_argv, "train.num_eval_files=1"]
    argv += ["--models", "storm-tiny-pool", "--modes", "predictive", "--pairs", str(PAIRS)]
    assert pool_valid.main(argv) == 0
    printed = capsys.readouterr().out
    rows = {m[1]: (int(m[2]), *map(float, m.groups()[2:])) for m in LINE.finditer(printed)}
    assert [(part, rows[part][0]) for part in rows] == [("mixtures", 1), ("pairs", 2), ("all", 3)]

    enhancer = Enhancer.from_pretrained("storm-tiny-pool", device="cpu")
    scores = []
    for name in sorted(p.name for p in (PAIRS / "clean").iterdir()):
        clean, rate = read_mono(PAIRS / "clean" / name)
        noisy, _ = read_mono(PAIRS / "noisy" / name)
        scale = 1.0 / np.abs(noisy).max()  # as the pairs datasets normalise
        out = enhancer((noisy * scale).astype(np.float32), rate, mode="predictive")
        scores.append(compute_metrics(clean * scale, np.asarray(out), rate))
    expected = [np.mean([s[m] for s in scores]) for m in ("pesq", "estoi", "si_sdr")]
    np.testing.assert_allclose(rows["pairs"][1:], expected, atol=2e-3)
    pooled = (np.array(rows["mixtures"][1:]) + 2 * np.array(rows["pairs"][1:])) / 3
    np.testing.assert_allclose(rows["all"][1:], pooled, atol=2e-3)


def test_bad_inputs_fail_in_one_line_naming_the_problem(pool_valid, pool_argv, tmp_path):
    none, gone = [*pool_argv, "train.num_eval_files=0"], tmp_path / "gone"
    cases = {
        "nothing to score: set train.num_eval_files or --pairs": none,
        f"{gone / 'clean'}: no such folder": [*none, "--pairs", str(gone)],
        "nosuch: not a model folder": [*pool_argv, "train.num_eval_files=1"],
        f"{gone}: no such folder": [*pool_argv, f"data.noise={gone}"],
    }
    for message, argv in cases.items():
        model = "nosuch" if "nosuch" in message else "storm-tiny-pool"
        with pytest.raises(SystemExit) as exit_info:
            pool_valid.main([*argv, "--models", model])
        text = str(exit_info.value)
        assert text.startswith("error: ") and message in text and "\n" not in text
        assert "unexpected" not in text
