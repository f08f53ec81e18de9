"""`audiodiff bench`: quick rows, the reference side by side, bf16, NFE counting, memory."""

import argparse
import contextlib
import inspect
import io
import json
import math

import pytest
import torch

from audiodiff import bench
from audiodiff.nets import NCSNppConfig

# a layout small enough for CPU bf16 (which has no native kernels on many CPUs) and for hooks
MICRO = NCSNppConfig(nf=4, ch_mult=(1, 1, 2, 2), num_res_blocks=1, attn_resolutions=())


def parse(argv):
    parser = argparse.ArgumentParser(prog="audiodiff")
    bench.add_bench_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


def run_json(argv) -> dict:
    args = parse([*argv, "--json"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return json.loads(out.getvalue())


@pytest.fixture
def micro(monkeypatch):
    monkeypatch.setitem(bench.EXTRA_PRESETS, "micro", MICRO)
    return "micro"


@pytest.fixture(scope="module")
def quick():
    """The CI form, run once through the parser and run_bench, as JSON."""
    return run_json(["--quick", "--device", "cpu"])


def test_quick_rows_are_complete_and_consistent(quick):
    rows = quick["rows"]
    assert {r["mode"] for r in rows} == {"score", "storm", "predictive"}
    assert {r["batch"] for r in rows} == {1, 2} and {r["preset"] for r in rows} == {"ncsnpp_tiny"}
    for r in rows:
        assert r["seconds"] == 1.0 and r["precision"] == "fp32" and len(r["wall_all_s"]) == 1
        assert 1 <= r["nfe"] <= 4 and r["nfe_counted"] == r["nfe"]
        assert r["wall_s"] > 0 and r["peak_mem_mb"] is not None and r["peak_mem_mb"] >= 0
        assert r["rtf"] * r["x_realtime"] == pytest.approx(1.0)
        assert r["items_per_s"] * r["wall_s"] == pytest.approx(r["batch"])
        assert r["audio_s_per_s"] == pytest.approx(r["items_per_s"] * r["seconds"])
        assert r["ms_per_nfe"] == pytest.approx(1e3 * r["wall_s"] / r["nfe"])
    singles = {(r["mode"], r["nfe"]): r for r in rows if r["batch"] == 1}
    for r in rows:
        if r["batch"] == 2:
            base = singles[(r["mode"], r["nfe"])]
            assert r["speedup_vs_b1"] == pytest.approx(r["items_per_s"] / base["items_per_s"])
        else:
            assert r["speedup_vs_b1"] is None
    meta = quick["metadata"]
    assert meta["device"] == "cpu" and meta["device_name"] and meta["torch"] == torch.__version__
    assert meta["threads"] >= 1 and meta["quick"] and "RSS" in meta["memory_method"]


def test_quick_reference_side_by_side_agrees(quick):
    (row,) = quick["reference"]
    assert "error" not in row, row
    assert row["preset"] == "ncsnpp_tiny" and row["batch"] == 1
    assert row["nfe_counted_ours"] == row["nfe_counted_ref"] == row["nfe"] == 2
    assert row["net_max_abs_diff"] < 1e-4 and row["net_ref_max_abs"] > 1e-2
    assert row["sample_max_abs_diff"] < 1e-4 * row["sample_ref_max_abs"] and row["agree"]
    assert row["ratio_ours_to_ref"] == pytest.approx(row["ours_wall_s"] / row["ref_wall_s"])
    assert row["ours_ms_per_nfe"] > 0 and row["ref_ms_per_nfe"] > 0


def test_text_report_has_every_table(quick):
    text = bench.format_report(quick)
    assert "ms/NFE" in text and "x_rt" in text and "ours/ref" in text and "ncsnpp_tiny" in text


def test_text_output_from_the_command(micro, capsys):
    args = parse(["--quick", "--presets", micro, "--modes", "predictive", "--no-reference"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "predictive" in out and "peak_MB" in out and "ours/ref" not in out


def test_bf16_runs_on_cpu_and_reports_its_difference(micro):
    report = run_json(
        ["--quick", "--presets", micro, "--modes", "score", "predictive", "--batch-sizes", "1"]
        + ["--no-reference", "--bf16", "--seconds", "0.5", "--device", "cpu"]
    )
    bf16 = [r for r in report["rows"] if r["precision"] == "bf16"]
    assert len(bf16) == 2 and len(report["rows"]) == 4
    for r in bf16:
        assert math.isfinite(r["bf16_max_abs_diff"]) and r["bf16_max_abs_diff"] > 0
        assert r["nfe_counted"] == r["nfe"]


@pytest.mark.parametrize(
    "mode, method, nfe, steps, corrector",
    [
        ("score", "pc", 4, 2, 1),
        ("storm", "pc", 3, 2, 0),
        ("score", "ode_heun", 3, 2, 0),
        ("predictive", "-", 1, 0, 0),
    ],
)
def test_network_calls_of_a_timed_run_equal_the_nfe(micro, mode, method, nfe, steps, corrector):
    from audiodiff.enhance import Enhancer

    if mode != "predictive":
        assert bench.steps_for(mode, method, nfe, 1) == (steps, corrector)
    device = torch.device("cpu")
    kind = "score" if mode == "score" else "storm"
    model, config, probes = bench.build_bench_model(kind, micro, device)
    calls = []  # counted by hooks, independently of the bench's own probes
    for probe in probes:
        probe.module.register_forward_pre_hook(lambda *_: calls.append(1))
    case = bench.Case(micro, mode, method, steps, corrector, nfe, batch=2, seconds=0.5)
    plan = argparse.Namespace(repeats=2, seed=0)
    waves = bench.noisy_speech(0.5, 2)
    row, out = bench.bench_case(Enhancer(model, config, device), probes, case, waves, plan)
    assert len(calls) == 3 * nfe  # a warm-up and two timed runs
    assert row["nfe_counted"] == nfe and len(out) == 2 and out[0].shape == waves[0].shape


def test_steps_for_rejects_budgets_no_setting_spends():
    assert bench.steps_for("score", "pc", 10, 1) == (5, 1)
    assert bench.steps_for("storm", "pc", 6, 1) == (5, 0)
    assert bench.steps_for("score", "ode_euler", 7, 1) == (7, 0)
    assert bench.steps_for("score", "pc", 3, 1) is None
    assert bench.steps_for("score", "ode_heun", 4, 1) is None
    assert bench.steps_for("storm", "pc", 1, 0) is None


def test_parser_defaults_and_checks():
    plan = bench.resolve(parse(["--device", "cpu"]))
    assert plan.presets == ["ncsnpp_tiny", "ncsnpp_s"] and plan.batch_sizes == [1, 2, 4, 8, 16]
    assert plan.seconds == 2.0 and plan.repeats == 3 and plan.reference and not plan.bf16
    quick = bench.resolve(parse(["--quick", "--no-reference", "--repeats", "2"]))
    assert quick.presets == ["ncsnpp_tiny"] and quick.repeats == 2 and not quick.reference
    with pytest.raises(ValueError, match="unknown presets"):
        bench.resolve(parse(["--presets", "nope"]))
    with pytest.raises(SystemExit):  # refused at parse time now (cli_options.positive_int)
        parse(["--batch-sizes", "0"])


def test_long_signals_chunked_unchunked_and_the_memory_guard(micro, monkeypatch):
    from audiodiff.enhance import Enhancer

    chunk = inspect.signature(Enhancer).parameters["chunk_seconds"].default
    monkeypatch.setattr(bench.long, "LONG_PRESET", micro)
    report = run_json(["--long", "--long-seconds", "1", str(1.2 * chunk), "--device", "cpu"])
    rows = report["long"]
    doublings = [2.0**k for k in range(1, 8) if 2.0**k < 1.2 * chunk]  # unchunked: climbed to
    assert [(r["seconds"], r["chunk_seconds"], r["intermediate"]) for r in rows] == [
        (1.0, chunk, False),
        (1.2 * chunk, chunk, False),
        (1.0, None, False),
        *[(d, None, True) for d in doublings],
        (1.2 * chunk, None, False),
    ]
    assert all(r["status"] == "ok" and r["peak_mem_mb"] is not None for r in rows)
    assert [r["nfe_counted"] for r in rows] == [1, 2] + [1] * (2 + len(doublings))
    assert report["rows"] == [] and report["reference"] == []
    monkeypatch.setattr(bench.long, "_available_mb", lambda device: 0.0)
    guarded = run_json(["--long", "--long-seconds", "1", "3", "--device", "cpu"])["long"]
    assert [(r["seconds"], r["status"][:7]) for r in guarded] == [
        (1.0, "skipped"),
        (3.0, "skipped"),
        (1.0, "skipped"),
        (2.0, "skipped"),
        (3.0, "skipped"),
    ]  # the first length is guarded too, by the 1 s warm-up


def test_memory_meter_sees_a_large_allocation():
    with bench.MemoryMeter(torch.device("cpu")) as meter:
        block = torch.ones(64 * 2**20 // 4)  # 64 MB, touched
        del block
    assert meter.peak_mb is not None and meter.peak_mb > 40
