import numpy as np
import pytest
import soundfile as sf

from audiodiff.audio import AudioError, read_audio, resample, write_audio

DATA = __import__("pathlib").Path(__file__).parent / "data" / "pairs"


def test_read_real_file_is_channels_first():
    audio, rate = read_audio(DATA / "noisy" / "p287_001.wav")
    assert rate == 16000 and audio.ndim == 2 and audio.shape[0] == 1 and audio.dtype == np.float32
    assert audio.shape[1] == sf.info(str(DATA / "noisy" / "p287_001.wav")).frames


@pytest.mark.parametrize(
    "make,problem",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, I am text\n" * 20), "not a readable audio file"),
        (
            lambda p: p.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 10),
            "not a readable audio",
        ),
        (
            lambda p: sf.write(
                str(p),
                np.array([[0.1], [np.nan], [0.2]] * 10, dtype=np.float32),
                16000,
                subtype="FLOAT",
            ),
            "NaN or Inf",
        ),
    ],
)
def test_bad_files_give_one_line_error_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError) as info:
        read_audio(path)
    message = str(info.value)
    assert str(path) in message and problem in message and "\n" not in message


def test_write_is_atomic_and_round_trips(tmp_path):
    audio = np.stack([np.linspace(-0.5, 0.5, 1000), np.linspace(0.5, -0.5, 1000)]).astype(
        np.float32
    )
    out = tmp_path / "sub" / "x.flac"
    write_audio(out, audio, 8000)
    back, rate = read_audio(out)
    assert rate == 8000 and back.shape == audio.shape
    assert np.abs(back - audio).max() < 1e-4  # 16-bit FLAC
    assert [p.name for p in out.parent.iterdir()] == ["x.flac"]  # no temp files left


def test_failed_write_leaves_no_file(tmp_path):
    out = tmp_path / "x.unknownformat"
    with pytest.raises(ValueError):
        write_audio(out, np.zeros(100, dtype=np.float32), 16000)
    assert list(tmp_path.iterdir()) == []


def test_resample_preserves_a_sine_and_shapes():
    t = np.arange(48000) / 48000
    x = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32)  # (2, 48000)
    y = resample(x, 48000, 16000)
    assert y.shape == (2, 16000)
    ref = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)
    assert np.abs(y[0, 100:-100] - ref[100:-100]).max() < 1e-3
    assert resample(x, 16000, 16000) is not None and resample(x, 16000, 16000).shape == x.shape
