import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from audiodiff.cli import main

DATA = __import__("pathlib").Path(__file__).parent / "data" / "pairs"


def test_enhance_folder_keeps_relative_paths_and_reports(tmp_path, tiny_model_dir, capsys):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(DATA / "noisy" / "p287_001.wav", src / "a.wav")
    data, rate = sf.read(str(DATA / "noisy" / "p287_002.wav"))
    sf.write(str(src / "sub" / "b.flac"), np.stack([data, data], axis=1)[:20000], rate)
    before = (src / "a.wav").read_bytes()
    code = main(
        [
            "enhance",
            str(src),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
            "--steps",
            "1",
            "--json",
            "--quiet",
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["files"] == 2 and summary["failed"] == 0 and summary["rtf"] > 0
    out_b = sf.info(str(tmp_path / "out" / "sub" / "b.flac"))
    assert (out_b.channels, out_b.frames, out_b.samplerate) == (2, 20000, rate)
    assert sf.info(str(tmp_path / "out" / "a.wav")).frames == sf.info(str(src / "a.wav")).frames
    assert (src / "a.wav").read_bytes() == before


def test_bad_file_is_named_and_others_still_run(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "broken.wav").write_text("not audio")
    shutil.copy(DATA / "noisy" / "p287_001.wav", tmp_path / "good.wav")
    code = main(
        [
            "enhance",
            str(tmp_path / "broken.wav"),
            str(tmp_path / "good.wav"),
            str(tmp_path / "missing.wav"),
            "-o",
            str(tmp_path / "out"),
            "--model",
            str(tiny_model_dir),
            "--steps",
            "1",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "broken.wav" in err and "missing.wav: no such file" in err
    assert (tmp_path / "out" / "good.wav").exists()


def test_refuses_to_overwrite_an_input(tmp_path, tiny_model_dir, capsys):
    shutil.copy(DATA / "noisy" / "p287_001.wav", tmp_path / "a.wav")
    before = (tmp_path / "a.wav").read_bytes()
    code = main(
        [
            "enhance",
            str(tmp_path / "a.wav"),
            "-o",
            str(tmp_path),
            "--model",
            str(tiny_model_dir),
            "--steps",
            "1",
            "--quiet",
        ]
    )
    assert code == 2 and "overwrite" in capsys.readouterr().err  # refused as a usage error
    assert (tmp_path / "a.wav").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav"]  # nothing written, no manifest


def test_attenuation_limit_option(tmp_path, capsys):
    shutil.copy(DATA / "noisy" / "p287_001.wav", tmp_path / "a.wav")
    common = ["--mode", "predictive", "--quiet"]  # the bundled model, one pass
    source = str(tmp_path / "a.wav")
    for out, extra in (("free", []), ("limited", ["--atten-lim-db", "6"])):
        assert main(["enhance", source, "-o", str(tmp_path / out), *common, *extra]) == 0
    noisy, _ = sf.read(str(tmp_path / "a.wav"))
    free, _ = sf.read(str(tmp_path / "free" / "a.wav"))
    limited, _ = sf.read(str(tmp_path / "limited" / "a.wav"))
    keep = 10 ** (-6 / 20)
    # both outputs are 16-bit PCM: within two quantisation steps of the closed form
    assert np.abs(limited - (free + keep * (noisy - free))).max() <= 2 / 32768
    assert np.abs(limited - free).max() > 100 / 32768
    with pytest.raises(SystemExit) as exit_:
        main(["enhance", source, "-o", str(tmp_path / "x"), "--atten-lim-db", "-1"])
    assert exit_.value.code == 2
    assert "--atten-lim-db: must be a positive number, got -1" in capsys.readouterr().err
