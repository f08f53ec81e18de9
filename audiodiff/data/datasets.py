"""Torch datasets of waveform crops for SGMSE+/StoRM training (no STFT: the trainer does it).

Both datasets return ``(clean_target, noisy)`` float32 tensors of shape (L,), divided by the
crop's max|noisy| (SGMSE+ normalisation; a silent crop is left unscaled). Every random choice of
item ``i`` in epoch ``e`` comes from ``numpy.random.default_rng([seed, e, 0, i])``, so an item does
not depend on access order, worker or DDP rank, and resuming at an epoch is exact. Call
``set_epoch(e)`` before each epoch's iterator is created (DataLoader workers copy the dataset
when the iterator starts; with ``persistent_workers`` they would not see the new epoch).
"""

from __future__ import annotations

import csv
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from audiodiff.audio import AudioError, read_audio, resample
from audiodiff.data import mixing
from audiodiff.data.pairs import AUDIO_SUFFIXES, Pair, list_audio_files

__all__ = [
    "AUDIO_SUFFIXES",
    "MixConfig",
    "MixItem",
    "OnTheFlyMixDataset",
    "PairedDataset",
    "list_audio_files",
    "load_mono",
    "manifest_rt60",
    "normalise",
]

SGMSE_CROP = 32640  # (256 - 1) * hop 128: the SGMSE+ training crop of 256 STFT frames
RIR_SOURCES = ("measured", "ddsp")
_SILENT_PEAK = 1e-4  # a file whose peak is below this (-80 dBFS) is treated as silent
_SILENT_ENERGY_PER_SAMPLE = 1e-10


def load_mono(path: str | os.PathLike, sample_rate: int, channel: int | None = None) -> np.ndarray:
    """Read a file as mono float32 (L,) at ``sample_rate`` (soxr when the file's rate differs).

    ``channel=None`` averages the channels; an int picks one (e.g. 0 for a multichannel RIR,
    whose channels have different delays). Raises AudioError naming the file.
    """
    audio, rate = read_audio(path)
    if channel is not None and channel >= audio.shape[0]:
        raise AudioError(path, f"has {audio.shape[0]} channel(s), channel {channel} requested")
    mono = audio.mean(axis=0) if channel is None else audio[channel]
    return resample(mono, rate, sample_rate)


def normalise(clean: np.ndarray, noisy: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Divide both (L,) signals by max|noisy| (unless silent); float32 tensors (L,)."""
    peak = float(np.max(np.abs(noisy))) if noisy.size else 0.0
    scale = 1.0 / peak if peak > 1e-8 else 1.0
    clean = np.ascontiguousarray(clean * scale, dtype=np.float32)
    noisy = np.ascontiguousarray(noisy * scale, dtype=np.float32)
    return torch.from_numpy(clean), torch.from_numpy(noisy)


def _item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, 0, index])


def _check_crop(crop_samples: int | None) -> None:
    if crop_samples is not None and crop_samples < 1:
        raise ValueError(f"crop_samples must be positive or None, got {crop_samples}")


class PairedDataset(Dataset):
    """Clean/noisy crops from :class:`~audiodiff.data.pairs.Pair` files (e.g. VB-DMD).

    Training (``train=True``): a random crop of ``crop_samples`` per (seed, epoch, index); else
    the centred crop, the same every epoch. Files shorter than the crop are zero-padded on both
    sides (as SGMSE+ does); ``crop_samples=None`` returns whole files. Files are read on access,
    mixed down to mono and resampled to ``sample_rate``. Item: ``(clean, noisy)``, each (L,).
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        crop_samples: int | None = SGMSE_CROP,
        train: bool = True,
        seed: int = 0,
        *,
        sample_rate: int = 16000,
    ) -> None:
        _check_crop(crop_samples)
        self.pairs = list(pairs)
        if not self.pairs:
            raise ValueError("PairedDataset needs at least one pair")
        self.crop_samples = crop_samples
        self.train = train
        self.seed = seed
        self.sample_rate = sample_rate
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole (clean, noisy) of pair ``index`` as float32 (L,); AudioError if lengths differ."""
        pair = self.pairs[index]
        clean = load_mono(pair.clean, self.sample_rate)
        noisy = load_mono(pair.noisy, self.sample_rate)
        if clean.shape != noisy.shape:
            raise AudioError(
                pair.noisy, f"length {noisy.shape[-1]} differs from its clean {clean.shape[-1]}"
            )
        return clean, noisy

    def crop_start(self, index: int, length: int) -> int:
        """First sample of the crop of a file of ``length`` samples (< 0 means padding)."""
        crop = self.crop_samples
        if crop is None:
            return 0
        if length < crop:
            return -((crop - length) // 2)
        if not self.train:
            return (length - crop) // 2
        return int(_item_rng(self.seed, self.epoch, index).integers(0, length - crop + 1))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        clean, noisy = self.load(index)
        length = clean.shape[-1]
        crop = self.crop_samples or length
        start = self.crop_start(index, length)
        clean = mixing.segment(clean, start, start + crop)
        noisy = mixing.segment(noisy, start, start + crop)
        return normalise(clean, noisy)


def _range(name: str, value, low: float = -math.inf) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (low, high) pair of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < low:
        raise ValueError(f"{name} must be finite with {low} <= low <= high, got {value!r}")
    return lo, hi


@dataclass(frozen=True)
class MixConfig:
    """How :class:`OnTheFlyMixDataset` draws a mixture (ranges are uniform (low, high) in dB/s).

    ``gain_db`` scales the mixture and the target alike. With probability ``reverb_prob`` the
    speech is reverberated by a measured RIR (``rir_source="measured"``, filtered to RT60 <=
    ``max_rt60_s`` when set) or a DDSP exponential-decay RIR with RT60 in ``rt60_s`` and DRR in
    ``drr_db``; the target is then the dry speech or its direct path + first ``early_ms`` ms.
    """

    snr_db: tuple[float, float] = (-5.0, 20.0)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    reverb_prob: float = 0.0
    rir_source: str = "measured"
    rt60_s: tuple[float, float] = (0.2, 0.8)
    drr_db: tuple[float, float] = (0.0, 10.0)
    max_rt60_s: float | None = None
    target: str = "dry"
    early_ms: float = 50.0
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        for name in ("snr_db", "gain_db", "drr_db"):
            object.__setattr__(self, name, _range(name, getattr(self, name)))
        object.__setattr__(self, "rt60_s", _range("rt60_s", self.rt60_s))
        if self.rt60_s[0] <= 0:
            raise ValueError(f"rt60_s must be positive, got {self.rt60_s}")
        if not 0.0 <= self.reverb_prob <= 1.0:
            raise ValueError(f"reverb_prob must be in [0, 1], got {self.reverb_prob}")
        if self.rir_source not in RIR_SOURCES:
            raise ValueError(f"rir_source must be one of {RIR_SOURCES}, got {self.rir_source!r}")
        if self.target not in mixing.TARGETS:
            raise ValueError(f"target must be one of {mixing.TARGETS}, got {self.target!r}")
        if self.max_rt60_s is not None and not self.max_rt60_s > 0:
            raise ValueError(f"max_rt60_s must be positive or None, got {self.max_rt60_s}")
        if not self.early_ms >= 0 or self.sample_rate <= 0:
            raise ValueError("early_ms must be >= 0 and sample_rate positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MixConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown mixing settings: {sorted(unknown)}")
        return cls(**d)


@dataclass
class MixItem:
    """One drawn mixture before normalisation: ``target`` and ``noisy`` (L,) and how they were made.

    ``noisy = gain · (speech + noise)`` and ``target = gain · (dry or early speech)``, where
    ``speech`` is the (reverberant) speech; ``realised_snr_db`` is 10·log10(Σspeech²/Σnoise²).
    """

    target: np.ndarray
    noisy: np.ndarray
    clean_file: str
    clean_offset: int
    noise_file: str
    noise_offset: int
    snr_db: float
    realised_snr_db: float
    gain_db: float
    reverb: str = "none"  # "none" | "measured" | "ddsp"
    rir_file: str = ""
    rt60_s: float = math.nan
    drr_db: float = math.nan
    extra: dict = field(default_factory=dict)


_RT60_NOTE = re.compile(r"RT60\s*~\s*([0-9]*\.?[0-9]+)\s*s")


def manifest_rt60(path: str | os.PathLike) -> float | None:
    """RT60 of an RIR from the ``note`` column ("RT60 ~ 0.77 s") of a ``manifest.csv`` next to it
    or in its parent folder (the shared train_pool layout), matched by file name; else None."""
    path = Path(path)
    for folder in (path.parent, path.parent.parent):
        manifest = folder / "manifest.csv"
        if not manifest.is_file():
            continue
        with open(manifest, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if Path(row.get("file") or "").name == path.name:
                    match = _RT60_NOTE.search(row.get("note") or "")
                    if match:
                        return float(match.group(1))
    return None


def _load_all(
    files: Sequence[str | os.PathLike], sample_rate: int, kind: str, on_error: str, channel=None
) -> tuple[list[Path], list[np.ndarray], list[str]]:
    """Load files as mono (L,) arrays; unreadable or silent ones are problems (one line each)."""
    kept, audio, problems = [], [], []
    for file in files:
        try:
            x = load_mono(file, sample_rate, channel)
            if float(np.max(np.abs(x))) < _SILENT_PEAK:
                raise AudioError(file, f"silent (peak below {_SILENT_PEAK})")
        except AudioError as err:
            problems.append(f"{kind}: {err}")
            continue
        kept.append(Path(file))
        audio.append(x)
    if problems and on_error == "raise":
        raise ValueError(f"{len(problems)} unusable audio file(s):\n" + "\n".join(problems))
    if problems:
        warnings.warn("skipped unusable audio files:\n" + "\n".join(problems), stacklevel=3)
    return kept, audio, problems


class OnTheFlyMixDataset(Dataset):
    """Fresh speech + noise (+ reverb) mixtures per (seed, epoch, index), cached audio in memory.

    Clean files are visited in a per-epoch random order (each once per ``len(clean_files)``
    items); noise, offsets, SNR, gain and reverb are drawn per item. All audio is loaded at
    construction at ``config.sample_rate`` (mono; RIRs use channel 0); unreadable or silent files
    raise ValueError listing them (``on_error="raise"``) or are skipped with a warning
    (``"skip"``, listed in ``self.skipped``). ``crop_samples=None`` gives whole utterances.
    Item: ``(clean_target, noisy)``, each (L,), normalised by max|noisy|.
    """

    def __init__(
        self,
        clean_files: Sequence[str | os.PathLike],
        noise_files: Sequence[str | os.PathLike],
        rir_files: Sequence[str | os.PathLike] = (),
        *,
        config: MixConfig = MixConfig(),  # noqa: B008 (frozen, so a shared default is safe)
        crop_samples: int | None = SGMSE_CROP,
        epoch_size: int | None = None,
        seed: int = 0,
        on_error: str = "raise",
    ) -> None:
        _check_crop(crop_samples)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        self.config, self.crop_samples, self.seed, self.epoch = config, crop_samples, seed, 0
        rate = config.sample_rate
        self.clean_files, self.clean, bad_c = _load_all(clean_files, rate, "clean", on_error)
        self.noise_files, self.noise, bad_n = _load_all(noise_files, rate, "noise", on_error)
        self.rir_files, self.rirs, bad_r = _load_all(rir_files, rate, "rir", on_error, 0)
        self.skipped = bad_c + bad_n + bad_r
        if not self.clean or not self.noise:
            raise ValueError("OnTheFlyMixDataset needs at least one usable clean and noise file")
        self.rir_rt60 = [self._rt60(f, h) for f, h in zip(self.rir_files, self.rirs)]
        if config.max_rt60_s is not None:
            keep = [i for i, t in enumerate(self.rir_rt60) if not t > config.max_rt60_s]
            self.rir_files = [self.rir_files[i] for i in keep]
            self.rirs = [self.rirs[i] for i in keep]
            self.rir_rt60 = [self.rir_rt60[i] for i in keep]
        needs_rirs = config.reverb_prob > 0 and config.rir_source == "measured"
        if needs_rirs and not self.rirs:
            raise ValueError("reverb_prob > 0 with rir_source='measured' needs usable RIR files")
        self.epoch_size = len(self.clean) if epoch_size is None else int(epoch_size)
        if self.epoch_size < 1:
            raise ValueError(f"epoch_size must be positive, got {epoch_size}")
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    def _rt60(self, path: Path, rir: np.ndarray) -> float:
        """RT60 from the manifest note when there is one, else estimated from the RIR (nan: unknown,
        kept by the ``max_rt60_s`` filter)."""
        noted = manifest_rt60(path)
        return noted if noted is not None else mixing.estimate_rt60(rir, self.config.sample_rate)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_size

    def _clean_index(self, epoch: int, index: int) -> int:
        n = len(self.clean)
        block = index // n
        order = self._orders.get((epoch, block))
        if order is None:
            if len(self._orders) > 8:
                self._orders.clear()
            order = np.random.default_rng([self.seed, epoch, 1, block]).permutation(n)
            self._orders[(epoch, block)] = order
        return int(order[index % n])

    def _draw_rir(self, rng: np.random.Generator, item: dict) -> np.ndarray | None:
        """Reverb decision and RIR (M,) or None; always makes the same draws from ``rng``."""
        cfg = self.config
        use = rng.random() < cfg.reverb_prob
        pick = rng.random()
        rt60, drr = float(rng.uniform(*cfg.rt60_s)), float(rng.uniform(*cfg.drr_db))
        ir_seed = int(rng.integers(0, 2**31 - 1))
        if not use:
            return None
        if cfg.rir_source == "ddsp":
            item.update(reverb="ddsp", rt60_s=rt60, drr_db=drr)
            return mixing.ddsp_rir(rt60, drr, cfg.sample_rate, ir_seed)
        k = int(pick * len(self.rirs))
        item.update(reverb="measured", rir_file=str(self.rir_files[k]), rt60_s=self.rir_rt60[k])
        return self.rirs[k]

    def _speech(self, rng, clean: np.ndarray, length: int, item: dict) -> tuple:
        """Crop (and reverberate) the clean utterance: (speech in the mixture, target), (L,)."""
        n = clean.shape[-1]
        u = rng.random()
        if n < length:
            start = -((length - n) // 2)
        else:
            start = int(u * (n - length + 1))
            if mixing.energy(clean[start : start + length]) < _SILENT_ENERGY_PER_SAMPLE * length:
                start = mixing.loudest_offset(clean, length)
        item["clean_offset"] = start
        rir = self._draw_rir(rng, item)
        if rir is None:
            speech = mixing.segment(clean, start, start + length)
            return speech, speech.copy()
        peak = int(np.argmax(np.abs(rir)))
        pre = rir.shape[-1] - 1 - peak  # earlier speech whose tail reaches the crop
        context = mixing.segment(clean, start - pre, start + length + peak)
        wet, target = mixing.reverberate(
            context, rir, self.config.target, self.config.early_ms, self.config.sample_rate
        )
        return wet[pre : pre + length], target[pre : pre + length]

    def _noise(self, rng, length: int, item: dict) -> np.ndarray:
        k = int(rng.integers(0, len(self.noise)))
        noise = self.noise[k]
        offset = mixing.random_offset(noise.shape[-1], length, rng)
        if noise.shape[-1] > length:
            window = noise[offset : offset + length]
            if mixing.energy(window) < _SILENT_ENERGY_PER_SAMPLE * length:
                offset = mixing.loudest_offset(noise, length)
        item.update(noise_file=str(self.noise_files[k]), noise_offset=offset)
        return mixing.loop_crop(noise, length, offset)

    def mix(self, index: int, epoch: int | None = None) -> MixItem:
        """The mixture of item ``index`` in ``epoch`` (default: the current one), unnormalised."""
        if not 0 <= index < self.epoch_size:
            raise IndexError(f"index {index} out of range for epoch size {self.epoch_size}")
        epoch = self.epoch if epoch is None else int(epoch)
        rng = _item_rng(self.seed, epoch, index)
        k = self._clean_index(epoch, index)
        clean = self.clean[k]
        length = self.crop_samples or clean.shape[-1]
        item: dict = {"clean_file": str(self.clean_files[k])}
        speech, target = self._speech(rng, clean, length, item)
        noise = self._noise(rng, length, item)
        snr = float(rng.uniform(*self.config.snr_db))
        gain = float(rng.uniform(*self.config.gain_db))
        noisy, scaled_noise = mixing.mix_at_snr(speech, noise, snr)
        realised = mixing.snr_db(speech, scaled_noise)
        return MixItem(
            target=mixing.apply_gain_db(target, gain),
            noisy=mixing.apply_gain_db(noisy, gain),
            snr_db=snr,
            realised_snr_db=realised,
            gain_db=gain,
            **item,
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.mix(index)
        return normalise(item.target, item.noisy)
