"""`audiodiff enhance` against a matrix of awkward and broken inputs."""

from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.checkpoint import build_model, save_pretrained
from audiodiff.cli import main
from audiodiff.config import ModelConfig
from audiodiff.nets import PRESETS

RATE = 16000


@pytest.fixture(scope="module")
def micro_predictive_dir(tmp_path_factory):
    """A very small untrained predictive model: cheap enough for 10 minutes of audio."""
    torch.manual_seed(0)
    net = replace(PRESETS["ncsnpp_tiny"], nf=8, in_channels=2, time_conditional=False)
    config = ModelConfig(kind="predictive", backbone=None, predictor=net)
    return save_pretrained(build_model(config), config, tmp_path_factory.mktemp("m") / "micro")


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * np.random.default_rng(0).standard_normal(
        t.size
    )
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


GOOD = {  # name -> (data (frames, channels), rate)
    "clipped.wav": (np.clip(tone(1.0, RATE) * 10, -1, 1), RATE),
    "silent.wav": (np.zeros((RATE, 1), np.float32), RATE),
    "one_sample.wav": (np.full((1, 1), 0.5, np.float32), RATE),
    "rate8k.wav": (tone(1.0, 8000), 8000),
    "rate48k.flac": (tone(1.0, 48000), 48000),
    "rate96k.wav": (tone(0.5, 96000), 96000),
    "stereo.wav": (tone(1.0, RATE, 2), RATE),
    "six_channels.wav": (tone(0.5, RATE, 6), RATE),
    "speech.ogg": (tone(1.0, RATE), RATE),
}


def write_bad_files(folder):
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("this is not audio\n" * 50)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(range(40)))
    nan = tone(0.5, RATE)
    nan[100] = np.nan
    sf.write(str(folder / "nan.wav"), nan, RATE, subtype="FLOAT")
    inf = tone(0.5, RATE)
    inf[5] = np.inf
    sf.write(str(folder / "inf.wav"), inf, RATE, subtype="FLOAT")
    return ["empty.wav", "text.wav", "corrupt.wav", "nan.wav", "inf.wav", "missing.wav"]


def test_matrix_of_inputs(tmp_path, micro_predictive_dir, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for name, (data, rate) in GOOD.items():
        sf.write(str(src / name), data, rate)
    bad = write_bad_files(src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    inputs = [str(src / n) for n in list(GOOD) + bad]
    code = main(
        [
            "enhance",
            *inputs,
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(micro_predictive_dir),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    for name in bad:  # one line each, naming the file
        assert sum(name in line for line in err) == 1, (name, err)
    assert len(err) == len(bad)
    for name, (data, rate) in GOOD.items():
        info = sf.info(str(tmp_path / "out" / name))
        assert (info.frames, info.samplerate, info.channels) == (data.shape[0], rate, data.shape[1])
        out, _ = sf.read(str(tmp_path / "out" / name), always_2d=True)
        assert np.isfinite(out).all()
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched


def test_ten_minutes_runs_in_flat_chunks(tmp_path, micro_predictive_dir):
    path = tmp_path / "long.flac"
    sf.write(str(path), tone(600.0, RATE), RATE)
    code = main(
        [
            "enhance",
            str(path),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(micro_predictive_dir),
            "--chunk-seconds",
            "2",
            "--quiet",
        ]
    )
    assert code == 0
    assert sf.info(str(tmp_path / "out" / "long.flac")).frames == 600 * RATE
