"""Audio I/O (soundfile) and resampling (soxr).

Arrays are float32 with time on the LAST axis, (channels, samples), everywhere inside audiodiff;
soundfile's (frames, channels) layout is converted at this edge.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from .errors import InputError
from .files import atomic_write


class AudioError(InputError):
    """A file that cannot be used as audio. The message is one line and names the file."""


def wav_promised_frames(path: str | os.PathLike) -> int | None:
    """The frames a RIFF/WAVE header's ``data`` chunk promises, or None (not a plain WAV, or a
    streaming writer's placeholder size). Reads only the chunk headers."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block_align = None
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return None
            name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if name == b"fmt ":
                fmt = f.read(size + size % 2)
                block_align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
                continue
            if name == b"data":
                if not block_align or size in (0, 0xFFFFFFFF):
                    return None
                return size // block_align
            f.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even size


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a file as a (channels, samples) float32 array and its rate; raise AudioError.

    Refused, in one line naming the file: missing, a folder, empty, unreadable, no samples,
    NaN/Inf samples, and a truncated file (fewer frames than its header promises).
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file")
    try:
        promised = max(sf.info(str(path)).frames, wav_promised_frames(path) or 0)
        data, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise AudioError(path, f"not a readable audio file ({reason})") from None
    if data.shape[0] == 0:
        raise AudioError(path, "contains no samples")
    if data.shape[0] < promised:
        raise AudioError(
            path,
            f"truncated: its header promises {promised:,} frames, the file holds {data.shape[0]:,}",
        )
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
