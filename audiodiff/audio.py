"""Audio I/O (soundfile) and resampling (soxr).

Arrays are float32 with time on the LAST axis, (channels, samples), everywhere inside audiodiff;
soundfile's (frames, channels) layout is converted at this edge.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .files import atomic_write


class AudioError(ValueError):
    """A file that cannot be used as audio. The message is one line and names the file."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a file as a (channels, samples) float32 array and its rate; raise AudioError."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    try:
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioError(path, f"not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(path, "contains NaN or Inf samples")
    return np.ascontiguousarray(data.T), int(sample_rate)  # (frames, C) -> (C, frames)


def write_audio(
    path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None
) -> None:
    """Write (channels, samples) or (samples,) audio atomically: temp file in place, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.asarray(audio, dtype=np.float32)
    frames = audio[:, None] if audio.ndim == 1 else audio.T  # -> (frames, C) for soundfile
    file_format = path.suffix.lstrip(".").upper() or "WAV"
    atomic_write(
        path, lambda tmp: sf.write(tmp, frames, sample_rate, format=file_format, subtype=subtype)
    )


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample along the last axis with soxr (VHQ); returns float32."""
    if from_rate == to_rate:
        return np.asarray(audio, dtype=np.float32)
    audio = np.asarray(audio, dtype=np.float32)
    lead = audio.shape[:-1]
    flat = audio.reshape(-1, audio.shape[-1])  # (..., L) -> (N, L)
    out = soxr.resample(
        flat.T, from_rate, to_rate, quality="VHQ"
    ).T  # soxr wants (frames, channels)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(*lead, -1)  # (N, L') -> (..., L')
