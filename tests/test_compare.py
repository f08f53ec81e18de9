"""eval/compare.py: mode specs, and a full run on the fixture pairs scored independently."""

import json
from pathlib import Path

import pytest

from audiodiff.audio import read_audio
from audiodiff.metrics import compute_metrics

REPO = Path(__file__).resolve().parents[1]
PAIRS = REPO / "tests" / "data" / "pairs"


@pytest.fixture(scope="module")
def compare(eval_script):
    return eval_script("compare")


def test_mode_specs_parse_and_bad_ones_are_named(compare):
    assert compare.parse_mode_spec("predictive") == {"mode": "predictive"}
    assert compare.parse_mode_spec("storm@3") == {"mode": "storm", "steps": 3}
    assert compare.parse_mode_spec("score:ode_heun@10") == {
        "mode": "score",
        "method": "ode_heun",
        "steps": 10,
    }
    assert compare.parse_mode_spec("score@30/1") == {
        "mode": "score",
        "steps": 30,
        "corrector_steps": 1,
    }
    for bad in ("stom@3", "score:heun@3", "score@x", "score@3/x"):
        with pytest.raises(SystemExit, match=bad):
            compare.parse_mode_spec(bad)


def test_compare_runs_each_spec_and_scores_the_noisy_row_independently(
    compare, tiny_model_dir, tmp_path
):
    out = tmp_path / "compare"
    argv = ["--pairs", str(PAIRS), "--subset", "all", "--model", str(tiny_model_dir)]
    argv += ["--modes", "score@1/1", "score:ode_heun@2", "predictive", "--peers", "--no-dnsmos"]
    assert compare.main([*argv, "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "compare.json").read_text())
    names = [s["name"] for s in result["systems"]]
    # a score model has no predictive mode: that spec is skipped with a note
    assert names == ["noisy input", "audiodiff score (N=1, C=1)", "audiodiff score ode_heun (N=2)"]
    assert all(s["rtf"] > 0 for s in result["systems"][1:])
    ids = sorted(p.stem for p in (PAIRS / "noisy").glob("*.wav"))
    scores = []
    for i in ids:
        clean, rate = read_audio(PAIRS / "clean" / f"{i}.wav")
        noisy, _ = read_audio(PAIRS / "noisy" / f"{i}.wav")
        scores.append(compute_metrics(clean[0], noisy[0], rate))
    noisy_row = result["systems"][0]["metrics"]
    for metric in ("pesq", "estoi", "si_sdr"):
        expected = sum(s[metric] for s in scores) / len(scores)
        assert noisy_row[metric]["mean"] == pytest.approx(expected, abs=1e-6)
    assert "| audiodiff score ode_heun (N=2) |" in (out / "compare.md").read_text()
    # the paired change against the input, from the written audio scored here
    heun = result["systems"][2]
    audio = next(out.glob("audiodiff_score_ode_heun*")) / "audio"
    enhanced = []
    for i in ids:
        clean, rate = read_audio(PAIRS / "clean" / f"{i}.wav")
        enhanced.append(compute_metrics(clean[0], read_audio(audio / f"{i}.wav")[0][0], rate))
    for metric in ("pesq", "estoi", "si_sdr"):
        deltas = [e[metric] - s[metric] for e, s in zip(enhanced, scores)]
        change = heun["vs_noisy"][metric]
        assert change["mean"] == pytest.approx(sum(deltas) / len(deltas), abs=1e-4)
        assert (change["higher"], change["n"]) == (sum(d > 0 for d in deltas), len(ids))
        assert change["ci95_low"] <= change["mean"] <= change["ci95_high"]
    assert "## Paired change against the noisy input" in (out / "compare.md").read_text()


def test_attenuation_limits_add_one_row_each(compare, tiny_model_dir):
    assert compare.atten_limit("none") is None and compare.atten_limit("20") == 20.0
    with pytest.raises(Exception, match="must be a positive number, got -3"):
        compare.atten_limit("-3")
    systems = compare.audiodiff_systems(
        str(tiny_model_dir), ["score@1/0"], None, 0, atten_limits=[None, 20.0]
    )
    assert list(systems) == ["audiodiff score (N=1)", "audiodiff score (N=1), atten. limit 20 dB"]
    noisy, rate = read_audio(PAIRS / "noisy" / "p287_001.wav")
    free, limited = (enhance(noisy[:, :8000], rate) for enhance in systems.values())
    expected = free + 0.1 * (noisy[:, :8000] - free)
    assert abs(limited - expected).max() < 1e-6


def test_eval50_is_a_fixed_list_that_a_folder_must_hold_whole(compare, tmp_path):
    ids = compare.eval50_ids()
    assert len(ids) == len(set(ids)) == 50 and ids == sorted(ids)
    assert {i.split("_")[0] for i in ids} == {"p232", "p257"}  # the VB-DMD test speakers
    for side in ("clean", "noisy"):  # a folder with all 50 and one more pair
        for stem in [*ids, "p232_002"]:
            (tmp_path / side).mkdir(exist_ok=True)
            (tmp_path / side / f"{stem}.wav").touch()
    assert compare.subset_ids(tmp_path, "eval50") == ids
    assert compare.subset_ids(tmp_path, "all")[:2] == ["p232_001", "p232_002"]
    (tmp_path / "noisy" / f"{ids[7]}.wav").unlink()
    missing = f"1 of the eval50 pairs are missing \\(first: {ids[7]}\\)"
    with pytest.raises(SystemExit, match=missing):
        compare.subset_ids(tmp_path, "eval50")


def test_a_second_model_and_paired_changes_against_a_chosen_row(compare, tiny_model_dir, tmp_path):
    out = tmp_path / "compare"
    argv = ["--pairs", str(PAIRS), "--subset", "all", "--model", str(tiny_model_dir)]
    argv += ["--modes", "score@1/0", "--also-model", str(tiny_model_dir), "score@2/0"]
    argv += ["--against", "audiodiff score (N=1)", "--peers", "--no-dnsmos", "--quiet"]
    assert compare.main([*argv, "--out", str(out)]) == 0
    result = json.loads((out / "compare.json").read_text())
    systems = {s["name"]: s for s in result["systems"]}
    second = f"audiodiff score (N=2) [{tiny_model_dir.name}]"
    assert list(systems) == ["noisy input", "audiodiff score (N=1)", second]
    # against the N=1 row: the differences of the two rows' changes against the noisy input
    for metric in ("pesq", "estoi", "si_sdr"):
        expected = systems[second]["vs_noisy"][metric]["mean"]
        expected -= systems["audiodiff score (N=1)"]["vs_noisy"][metric]["mean"]
        assert systems[second]["vs_against"][metric]["mean"] == pytest.approx(expected, abs=1e-6)
    assert "vs_against" not in systems["audiodiff score (N=1)"]
    assert "## Paired change against audiodiff score (N=1)" in (out / "compare.md").read_text()
    with pytest.raises(SystemExit, match="no row named"):
        compare.main([*argv[:-5], "--against", "nothing", "--peers", "--no-dnsmos", "--quiet",
                      "--out", str(out)])  # fmt: skip
