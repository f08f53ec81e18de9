"""Hostile input on the command line: one line, the right exit code, nothing touched or left.

One row per case of the hostile-input issue (except the three rows of the enhance loop itself:
``-o`` naming a file, a read-only output folder, Ctrl-C during enhance) plus the cases that
already passed, so none regresses. Every row asserts the exit code, exactly one stderr line
``error: ...`` naming the file or option, no traceback, the inputs byte-identical (hash), and no
output, partial or temporary file left. The CLI runs in-process (``main([...])``); a few rows
run it as a subprocess, as a user would.
"""

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.checkpoint import CONFIG_FILE, WEIGHTS_FILE, build_model, save_pretrained
from audiodiff.cli import main
from audiodiff.config import ModelConfig
from audiodiff.nets import PRESETS

RATE = 16000
ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT / "tests" / "data" / "pairs" / "noisy" / "p287_001.wav"
RECIPE = ROOT / "recipes" / "pool" / "tiny_test.yaml"


def write_inputs(folder: Path) -> None:
    """Every bad (and one good) input file the rows below use."""
    speech, rate = sf.read(str(SPEECH), dtype="float32")
    sf.write(str(folder / "good.wav"), speech[: RATE // 2], rate)
    whole = (folder / "good.wav").read_bytes()
    (folder / "truncated.wav").write_bytes(whole[: 44 + 56])  # header promises 8000, holds 28
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("this is not audio\n" * 50)
    nan = speech[: RATE // 4].copy()
    nan[10] = np.nan
    sf.write(str(folder / "nan.wav"), nan, rate, subtype="FLOAT")
    loud = speech[: RATE // 4] * (2 / np.abs(speech[: RATE // 4]).max())  # peak 2.0
    sf.write(str(folder / "loud.wav"), loud, rate, subtype="FLOAT")
    (folder / "text.ckpt").write_text("a text file, not a checkpoint\n" * 20)
    (folder / "empty.ckpt").write_bytes(b"")
    (folder / "folder.ckpt").mkdir()
    (folder / "clean").mkdir()
    (folder / "enhanced").mkdir()
    torch.save({"hyper_parameters": {}, "obj": np.float64(1.0)}, folder / "pickled.ckpt")
    typo = RECIPE.read_text().replace("max_steps", "max_stepz", 1)
    assert typo != RECIPE.read_text()
    (folder / "typo.yaml").write_text(typo)


def write_models(folder: Path) -> None:
    """A micro predictive model, and broken copies of it."""
    torch.manual_seed(0)
    net = replace(PRESETS["ncsnpp_tiny"], nf=8, in_channels=2, time_conditional=False)
    config = ModelConfig(kind="predictive", backbone=None, predictor=net)
    good = save_pretrained(build_model(config), config, folder / "model")
    for name, edit in (
        ("truncated_weights", lambda d: d),
        ("nf_changed", lambda d: d["config"]["predictor"].update(nf=16)),
        ("unknown_key", lambda d: d["config"].update(bogus=1)),
    ):
        broken = folder / name
        broken.mkdir()
        weights = (good / WEIGHTS_FILE).read_bytes()
        cut = len(weights) // 2 if name == "truncated_weights" else len(weights)
        (broken / WEIGHTS_FILE).write_bytes(weights[:cut])
        document = json.loads((good / CONFIG_FILE).read_text())
        edit(document)
        (broken / CONFIG_FILE).write_text(json.dumps(document))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    write_inputs(folder)
    write_models(folder)
    return folder


def tree_hash(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """``main(argv)`` -> (exit code, non-empty stderr lines); a parse error exits with 2."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, err


# (id, argv with {in} = the inputs folder and {out} = a fresh output path, exit code, words that
# the one stderr line must hold)
ROWS = [
    # the table
    ("truncated-wav", ["enhance", "{in}/truncated.wav", "-o", "{out}", "--model", "{in}/model"],
     1, ["truncated.wav", "truncated", "8,000", "28"]),
    ("batch-size-negative", ["enhance", "{in}/good.wav", "-o", "{out}", "--batch-size", "-3"],
     2, ["--batch-size", "positive integer", "-3"]),
    ("batch-size-zero", ["enhance", "{in}/good.wav", "-o", "{out}", "--batch-size", "0"],
     2, ["--batch-size", "positive integer"]),
    ("truncated-safetensors", ["enhance", "{in}/good.wav", "-o", "{out}",
     "--model", "{in}/truncated_weights"], 1, ["truncated_weights", WEIGHTS_FILE, "corrupt"]),
    ("config-shapes-changed", ["enhance", "{in}/good.wav", "-o", "{out}",
     "--model", "{in}/nf_changed"], 1, [WEIGHTS_FILE, CONFIG_FILE, "tensor", "shape"]),
    ("chunk-seconds-inf", ["enhance", "{in}/good.wav", "-o", "{out}", "--chunk-seconds", "inf"],
     2, ["--chunk-seconds", "inf"]),
    ("chunk-seconds-nan", ["enhance", "{in}/good.wav", "-o", "{out}", "--chunk-seconds", "nan"],
     2, ["--chunk-seconds", "nan"]),
    ("device-potato", ["enhance", "{in}/good.wav", "-o", "{out}", "--device", "potato"],
     2, ["--device", "potato"]),
    ("device-absent-gpu", ["enhance", "{in}/good.wav", "-o", "{out}", "--device", "cuda:99"],
     2, ["--device", "cuda:99", "not available"]),
    *[
        (f"{command}-{name}", [command, f"{{in}}/{name}", "-o", "{out}"], 1, [name, problem])
        for command in ("convert", "export")
        for name, problem in (
            ("text.ckpt", "not a PyTorch checkpoint"),
            ("empty.ckpt", "empty"),
            ("good.wav", "not a PyTorch checkpoint"),
            ("folder.ckpt", "folder"),
        )
    ],
    ("eval-two-empty-folders", ["eval", "--clean", "{in}/clean", "--enhanced", "{in}/enhanced",
     "--out", "{out}", "--quiet"], 1, ["--enhanced", "no pairs"]),
    ("stream-truncated-wav", ["stream", "--input", "{in}/truncated.wav", "--output",
     "{out}/x.wav", "--fast", "--model", "{in}/model"], 1, ["truncated.wav", "truncated"]),
    ("stream-beyond-full-scale", ["stream", "--input", "{in}/loud.wav", "--output",
     "{out}/x.wav", "--fast", "--model", "{in}/model"], 1, ["loud.wav", "[-1, 1]"]),
    ("stream-output-is-the-input", ["stream", "--input", "{in}/good.wav", "--output",
     "{in}/good.wav", "--fast", "--model", "{in}/model"], 2, ["--output", "good.wav", "overwrite"]),
    ("stream-block-frames-zero", ["stream", "--input", "{in}/good.wav", "--output",
     "{out}/x.wav", "--block-frames", "0"], 2, ["--block-frames", "0"]),
    # the cases that already passed
    ("missing-file", ["enhance", "{in}/missing.wav", "-o", "{out}", "--model", "{in}/model"],
     1, ["missing.wav", "no such file"]),
    ("empty-file", ["enhance", "{in}/empty.wav", "-o", "{out}", "--model", "{in}/model"],
     1, ["empty.wav", "empty"]),
    ("non-audio-file", ["enhance", "{in}/text.wav", "-o", "{out}", "--model", "{in}/model"],
     1, ["text.wav", "not a readable audio file"]),
    ("nan-samples", ["enhance", "{in}/nan.wav", "-o", "{out}", "--model", "{in}/model"],
     1, ["nan.wav", "NaN"]),
    ("output-is-the-input-folder", ["enhance", "{in}/good.wav", "-o", "{in}",
     "--model", "{in}/model"], 2, ["-o", "good.wav", "overwrite"]),
    ("unknown-config-key", ["enhance", "{in}/good.wav", "-o", "{out}",
     "--model", "{in}/unknown_key"], 1, [CONFIG_FILE, "bogus"]),
    ("missing-model", ["enhance", "{in}/good.wav", "-o", "{out}", "--model", "{in}/nowhere"],
     1, ["nowhere", "not a model folder"]),
    ("recipe-typo", ["train", "{in}/typo.yaml"], 1, ["typo.yaml", "max_stepz"]),
    ("train-missing-pairs", ["train", str(ROOT / "recipes" / "vbdmd" / "sgmse.yaml"),
     "data.base={in}/nowhere"], 1, ["nowhere/train/clean", "no such folder", "1 more problem"]),
    ("train-missing-pool", ["train", str(ROOT / "recipes" / "pool" / "bridge_tiny.yaml"),
     "data.clean={in}/nowhere"], 1, ["nowhere", "no such folder"]),
    ("pickle-without-trust", ["convert", "{in}/pickled.ckpt", "-o", "{out}"],
     1, ["pickled.ckpt", "--trust-pickle"]),
    ("atten-lim-negative", ["enhance", "{in}/good.wav", "-o", "{out}", "--atten-lim-db", "-1"],
     2, ["--atten-lim-db", "-1"]),
    ("threads-zero", ["eval", "--clean", "{in}/clean", "--enhanced", "{in}/enhanced",
     "--threads", "0"], 2, ["--threads", "0"]),
    ("missing-required-option", ["enhance", "{in}/good.wav"], 2, ["--output", "required"]),
]  # fmt: skip


@pytest.mark.parametrize("argv, code, words", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_touches_nothing(argv, code, words, inputs, tmp_path, capsys):
    before = tree_hash(inputs)
    out = tmp_path / "out"
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(out)) for a in argv]
    quiet = ["--quiet"] if argv[0] == "enhance" and len(argv) > 2 else []  # no progress bar
    got, err = run(argv + quiet, capsys)
    assert got == code, err
    assert len(err) == 1 and err[0].startswith("error: "), err  # one line, no traceback
    assert all(word in err[0] for word in words), (words, err[0])
    assert "Traceback" not in err[0] and "unexpected" not in err[0]  # an input error, named
    assert tree_hash(inputs) == before  # inputs unchanged, nothing written among them
    # no output, partial or temp file: at most enhance's report of the failed files
    written = {p.name for p in out.rglob("*")} if out.exists() else set()
    assert written <= {"manifest.jsonl", ".enhance-settings.json"}, written
    if written:
        rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
        assert rows and all(row["status"] == "error" for row in rows)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_plain_cuda_is_refused_at_parse_time_without_a_gpu(capsys):
    code, err = run(["enhance", "x.wav", "-o", "y", "--device", "cuda"], capsys)
    assert code == 2 and len(err) == 1
    assert "--device" in err[0] and "not available" in err[0] and "docs/cli.md" in err[0]


def test_debug_shows_the_traceback_and_ctrl_c_exits_130(inputs, tmp_path, capsys, monkeypatch):
    argv = ["enhance", str(inputs / "good.wav"), "-o", str(tmp_path / "o")]
    broken = ["--model", str(inputs / "truncated_weights")]
    with pytest.raises(ValueError, match="corrupt"):  # InputError is a ValueError
        main(["--debug", *argv, *broken])
    with pytest.raises(ValueError, match="corrupt"):  # --debug after the command works too
        main([*argv, *broken, "--debug"])

    def interrupted(args):
        raise KeyboardInterrupt

    import audiodiff.evaluate

    monkeypatch.setattr(audiodiff.evaluate, "run_eval", interrupted)
    code, err = run(["eval", "--clean", str(tmp_path), "--enhanced", str(tmp_path)], capsys)
    assert code == 130 and len(err) == 1 and "interrupted" in err[0]


@pytest.mark.parametrize(
    "argv, code, word",
    [
        (["enhance", "a.wav", "-o", "o", "--batch-size", "0"], 2, "--batch-size"),
        (["stream", "--input", "a.wav", "--output", "b.wav", "--device", "potato"], 2, "potato"),
        (["convert", "{in}/good.wav", "-o", "{out}"], 1, "good.wav"),
    ],
)
def test_as_a_user_runs_it(argv, code, word, inputs, tmp_path):
    """The installed entry point: stderr is exactly one line, and no traceback."""
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(tmp_path / "o")) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "audiodiff.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and word in lines[0], lines
    assert not (tmp_path / "o").exists()
