"""STFT <-> compressed complex spectrogram, the representation SGMSE+ diffuses in.

Richter et al. 2023, Sec. IV-A: X̃ = β·|X|^α·e^{j∠X} with α = 0.5, β = 0.15 on a 510-point STFT (256
bins), hop 128, periodic Hann window, centred frames. The inverse undoes the compression exactly
before the iSTFT.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

WINDOWS = ("hann", "sqrthann")


@dataclass(frozen=True)
class SpecConfig:
    """STFT and amplitude-compression settings (defaults: SGMSE+ at 16 kHz)."""

    sample_rate: int = 16000
    n_fft: int = 510
    hop_length: int = 128
    window: str = "hann"
    alpha: float = 0.5  # magnitude exponent
    beta: float = 0.15  # scale factor
    frame_multiple: int = 64  # inference pads the frame count to a multiple of this

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if self.n_fft < 2 or self.hop_length < 1 or self.hop_length > self.n_fft:
            raise ValueError(f"need 1 <= hop_length <= n_fft, got {self.hop_length}, {self.n_fft}")
        if not (0 < self.alpha <= 1) or self.beta <= 0:
            raise ValueError(f"need 0 < alpha <= 1 and beta > 0, got {self.alpha}, {self.beta}")
        if self.sample_rate <= 0 or self.frame_multiple < 1:
            raise ValueError("sample_rate and frame_multiple must be positive")

    @property
    def num_freqs(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SpecConfig:
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown STFT settings: {sorted(unknown)}")
        return cls(**d)


def make_window(config: SpecConfig, device=None, dtype=torch.float32) -> torch.Tensor:
    window = torch.hann_window(config.n_fft, periodic=True, device=device, dtype=dtype)
    return window.sqrt() if config.window == "sqrthann" else window


def compress(spec: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """X -> β·|X|^α·e^{j∠X}."""
    if alpha == 1:
        return beta * spec
    return beta * spec.abs().pow(alpha) * torch.exp(1j * spec.angle())


def decompress(spec: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Exact inverse of :func:`compress`: X̃ -> |X̃/β|^{1/α}·e^{j∠X̃}."""
    spec = spec / beta
    if alpha == 1:
        return spec
    # X̃·|X̃|^{1/α − 1} is the same value and, unlike the polar form, differentiable at 0
    return spec * spec.abs().pow(1.0 / alpha - 1.0)


def num_frames(num_samples: int, config: SpecConfig) -> int:
    """Frames of a centred STFT of ``num_samples`` samples."""
    return num_samples // config.hop_length + 1


class Spectrogram:
    """Waveform (B, L) <-> compressed complex spectrogram (B, 1, F, T), any device.

    >>> spec = Spectrogram(SpecConfig())
    >>> X = spec.analyse(wave)           # (B, 1, 256, T) complex
    >>> wave_back = spec.synthesise(X, length=wave.shape[-1])
    """

    def __init__(self, config: SpecConfig = SpecConfig()):
        self.config = config

    def stft(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) real -> (B, F, T) complex, uncompressed."""
        window = make_window(self.config, device=wave.device, dtype=wave.dtype)
        return torch.stft(
            wave,
            self.config.n_fft,
            self.config.hop_length,
            window=window,
            center=True,
            return_complex=True,
        )

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, F, T) complex, uncompressed -> (B, length) real."""
        window = make_window(self.config, device=spec.device, dtype=spec.real.dtype)
        return torch.istft(
            spec,
            self.config.n_fft,
            self.config.hop_length,
            window=window,
            center=True,
            length=length,
        )

    def analyse(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, L) real -> (B, 1, F, T) compressed complex."""
        spec = compress(self.stft(wave), self.config.alpha, self.config.beta)
        return spec.unsqueeze(1)  # (B, F, T) -> (B, 1, F, T)

    def synthesise(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 1, F, T) compressed complex -> (B, length) real."""
        spec = decompress(spec.squeeze(1), self.config.alpha, self.config.beta)  # (B, F, T)
        return self.istft(spec, length)

    def pad_frames(self, spec: torch.Tensor) -> torch.Tensor:
        """Zero-pad the last (frame) axis up to a multiple of ``config.frame_multiple``."""
        frames = spec.shape[-1]
        target = -(-frames // self.config.frame_multiple) * self.config.frame_multiple
        return F.pad(spec, (0, target - frames))
