"""Tests of PairedDataset, OnTheFlyMixDataset and MixConfig."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio import AudioError
from audiodiff.data import mixing
from audiodiff.data.datasets import MixConfig, OnTheFlyMixDataset, PairedDataset, manifest_rt60
from audiodiff.data.pairs import Pair, find_pairs

RATE = 16000
COMMITTED = Path(__file__).resolve().parents[1] / "data"


def speech_like(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    return (rng.standard_normal(n) * (0.05 + np.abs(np.sin(2 * np.pi * 3 * t))) * 0.2).astype(
        np.float32
    )


def write(path: Path, audio: np.ndarray, rate: int = RATE, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype=subtype)
    return path


# ----------------------------------------------------------------------------- PairedDataset


@pytest.fixture
def ramp_pair(tmp_path) -> Pair:
    """A 3 s pair whose clean is a ramp (so a crop's start is readable from its first sample)."""
    n = 3 * RATE
    clean = write(tmp_path / "clean/r.wav", (np.arange(n) / n).astype(np.float32))
    noisy = write(tmp_path / "noisy/r.wav", speech_like(n, 1))
    return Pair("r.wav", clean, noisy)


def test_train_crops_depend_on_seed_and_epoch_only(ramp_pair):
    def first(seed, epoch):
        ds = PairedDataset([ramp_pair] * 3, crop_samples=4000, train=True, seed=seed)
        ds.set_epoch(epoch)
        return [ds[i][1] for i in (2, 0, 1)]

    a, again = first(0, 0), first(0, 0)
    assert all(torch.equal(x, y) for x, y in zip(a, again))
    assert not torch.equal(a[1], first(1, 0)[1])  # another seed
    assert not torch.equal(a[1], first(0, 1)[1])  # another epoch
    assert not torch.equal(a[1], a[2])  # items of one epoch differ


def test_valid_crop_is_centred_and_fixed(ramp_pair):
    ds = PairedDataset([ramp_pair], crop_samples=4000, train=False)
    clean, noisy = ds[0]
    raw_clean, raw_noisy = ds.load(0)
    start = (3 * RATE - 4000) // 2
    peak = np.abs(raw_noisy[start : start + 4000]).max()
    assert np.allclose(noisy.numpy() * peak, raw_noisy[start : start + 4000], atol=1e-6)
    assert np.allclose(clean.numpy() * peak, raw_clean[start : start + 4000], atol=1e-6)
    ds.set_epoch(5)
    assert torch.equal(ds[0][1], noisy)


def test_short_files_are_zero_padded_and_normalised(tmp_path):
    clean = write(tmp_path / "clean/s.wav", speech_like(1000, 2))
    noisy = write(tmp_path / "noisy/s.wav", speech_like(1000, 3) * 0.3)
    for train in (True, False):
        x, y = PairedDataset([Pair("s.wav", clean, noisy)], 4000, train=train)[0]
        assert x.shape == y.shape == (4000,) and x.dtype == y.dtype == torch.float32
        assert torch.all(y[:1500] == 0) and torch.all(y[2500:] == 0) and torch.all(x[2500:] == 0)
        assert y.abs().max().item() == pytest.approx(1.0, abs=1e-6)
        raw_clean, raw_noisy = sf.read(str(clean))[0], sf.read(str(noisy))[0]
        scale = np.abs(raw_noisy).max()
        assert np.allclose(x[1500:2500].numpy() * scale, raw_clean, atol=1e-6)


def test_silent_noisy_is_left_unscaled(tmp_path):
    silent = np.zeros(3000, dtype=np.float32)
    pair = Pair("z.wav", write(tmp_path / "c/z.wav", silent), write(tmp_path / "n/z.wav", silent))
    x, y = PairedDataset([pair], 2000)[0]
    assert torch.all(x == 0) and torch.all(y == 0) and torch.isfinite(y).all()


def test_committed_pairs_give_normalised_crops():
    ds = PairedDataset(find_pairs(COMMITTED, "pairs"), crop_samples=32640, train=True)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == y.shape == (32640,)
        assert y.abs().max().item() == pytest.approx(1.0, abs=1e-6)


def test_resampling_and_length_mismatch(tmp_path):
    clean = write(tmp_path / "c/a.wav", speech_like(800, 0), rate=8000)
    noisy = write(tmp_path / "n/a.wav", speech_like(800, 1), rate=8000)
    x, y = PairedDataset([Pair("a.wav", clean, noisy)], crop_samples=None)[0]
    assert x.shape == (1600,)
    bad = write(tmp_path / "n/b.wav", speech_like(900, 1), rate=8000)
    with pytest.raises(AudioError, match="b.wav"):
        PairedDataset([Pair("b.wav", clean, bad)])[0]
    with pytest.raises(ValueError):
        PairedDataset([])


# ------------------------------------------------------------------------ OnTheFlyMixDataset


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("pool")
    clean = [write(root / f"clean/c{i}.wav", speech_like(int(1.2 * RATE), i)) for i in range(4)]
    rng = np.random.default_rng(9)
    noise = [
        write(root / "noise/long.wav", rng.normal(0, 0.1, 2 * RATE)),
        write(root / "noise/short.flac", rng.normal(0, 0.1, 3000), subtype="PCM_16"),  # loops
    ]
    rirs = [write(root / "rir/room.wav", mixing.ddsp_rir(0.3, 3.0, RATE, seed=1) * 0.9)]
    return {"clean": clean, "noise": noise, "rir": rirs, "root": root}


def make_mixer(pool, seed=0, crop=8000, **config) -> OnTheFlyMixDataset:
    return OnTheFlyMixDataset(
        pool["clean"], pool["noise"], pool["rir"], config=MixConfig(**config),
        crop_samples=crop, epoch_size=6, seed=seed,
    )  # fmt: skip


def test_realised_snr_and_gain_of_the_mixture(pool):
    ds = make_mixer(pool, snr_db=(-5, 20), gain_db=(-6, 6))
    for i in range(len(ds)):
        item = ds.mix(i)
        target, noisy = (t.numpy().astype(np.float64) for t in ds[i])
        realised = 10 * math.log10(np.sum(target**2) / np.sum((noisy - target) ** 2))
        assert abs(realised - item.snr_db) < 0.1
        assert abs(item.realised_snr_db - item.snr_db) < 0.1
        assert -5 <= item.snr_db <= 20 and -6 <= item.gain_db <= 6
        k = [str(f) for f in ds.clean_files].index(item.clean_file)
        crop = mixing.segment(ds.clean[k], item.clean_offset, item.clean_offset + 8000)
        assert np.allclose(item.target, crop * 10 ** (item.gain_db / 20), atol=1e-6)


def test_items_depend_on_seed_epoch_and_index_only(pool):
    a, b = make_mixer(pool, seed=3), make_mixer(pool, seed=3)
    forward = [a[i] for i in range(6)]
    b.set_epoch(2)
    b[4]
    b.set_epoch(0)
    backward = {i: b[i] for i in reversed(range(6))}
    for i in range(6):
        assert torch.equal(forward[i][0], backward[i][0])
        assert torch.equal(forward[i][1], backward[i][1])
    assert not torch.equal(forward[0][1], make_mixer(pool, seed=4)[0][1])
    assert not torch.equal(forward[0][1], torch.as_tensor(a.mix(0, epoch=1).noisy))
    assert forward[0][1].abs().max().item() == pytest.approx(1.0, abs=1e-6)
    assert forward[0][0].shape == (8000,) and forward[0][0].dtype == torch.float32


def test_each_epoch_visits_every_clean_file_once(pool):
    ds = OnTheFlyMixDataset(pool["clean"], pool["noise"], config=MixConfig(), crop_samples=4000)
    assert len(ds) == 4
    for epoch in (0, 1):
        assert sorted(ds.mix(i, epoch).clean_file for i in range(4)) == sorted(
            str(p) for p in pool["clean"]
        )


@pytest.mark.parametrize("source", ["measured", "ddsp"])
@pytest.mark.parametrize("target", ["dry", "early"])
def test_reverberant_mixtures(pool, source, target):
    ds = make_mixer(pool, reverb_prob=1.0, rir_source=source, target=target, rt60_s=(0.2, 0.3))
    for i in range(3):
        item = ds.mix(i)
        assert item.reverb == source and 0.2 <= item.rt60_s <= 0.32
        assert abs(item.realised_snr_db - item.snr_db) < 0.1
        x, y = ds[i]
        assert torch.isfinite(x).all() and y.abs().max().item() == pytest.approx(1.0, abs=1e-6)
        k = [str(f) for f in ds.clean_files].index(item.clean_file)
        dry = mixing.segment(ds.clean[k], item.clean_offset, item.clean_offset + 8000)
        dry = dry * 10 ** (item.gain_db / 20)
        assert np.allclose(item.target, dry, atol=1e-6) == (target == "dry")


def test_max_rt60_filters_measured_rirs_by_manifest_note(pool, tmp_path):
    short = write(tmp_path / "rir/short.wav", mixing.ddsp_rir(0.3, 3.0, RATE, seed=2))
    hall = write(tmp_path / "rir/hall.wav", mixing.ddsp_rir(0.3, 3.0, RATE, seed=3))
    (tmp_path / "manifest.csv").write_text(
        'kind,file,note\nrir,rir/hall.wav,"trimmed; RT60 ~ 2.50 s (Schroeder)"\n'
    )
    assert manifest_rt60(hall) == 2.5 and manifest_rt60(short) is None
    config = MixConfig(reverb_prob=1.0, max_rt60_s=1.0)
    ds = OnTheFlyMixDataset(pool["clean"], pool["noise"], [short, hall], config=config)
    assert ds.rir_files == [short] and ds.rir_rt60[0] == pytest.approx(0.3, rel=0.2)
    with pytest.raises(ValueError, match="RIR"):
        OnTheFlyMixDataset(pool["clean"], pool["noise"], [hall], config=config)


def test_unreadable_files_raise_or_are_skipped(pool, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_text("not audio")
    with pytest.raises(ValueError, match="broken.wav"):
        OnTheFlyMixDataset(pool["clean"] + [bad], pool["noise"], config=MixConfig())
    with pytest.warns(UserWarning, match="broken.wav"):
        ds = OnTheFlyMixDataset(pool["clean"], pool["noise"] + [bad], on_error="skip")
    assert len(ds.noise) == 2 and "broken.wav" in ds.skipped[0]


@pytest.mark.parametrize(
    "kwargs,phrase",
    [
        ({"snr_db": (10, 0)}, "snr_db"),
        ({"gain_db": 3}, "gain_db"),
        ({"reverb_prob": 1.5}, "reverb_prob"),
        ({"rir_source": "sim"}, "rir_source"),
        ({"target": "wet"}, "target"),
        ({"rt60_s": (0.0, 0.5)}, "rt60_s"),
        ({"max_rt60_s": -1.0}, "max_rt60_s"),
    ],
)
def test_mix_config_validation(kwargs, phrase):
    with pytest.raises(ValueError, match=phrase):
        MixConfig(**kwargs)


def test_mix_config_round_trip():
    config = MixConfig.from_dict({"snr_db": [0, 5], "reverb_prob": 0.5})
    assert config.snr_db == (0.0, 5.0) and MixConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown"):
        MixConfig.from_dict({"snr": (0, 5)})
