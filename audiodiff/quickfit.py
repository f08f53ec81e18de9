"""A minimal training loop and the tiny StoRM layout, for tests and the scripts under eval/.

Recipe training, with EMA, checkpoints, validation and DDP, is ``audiodiff train``; this is the
few-line Adam loop that a test or an overfitting experiment needs, on random crops of mono pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import torch

from .config import ModelConfig, SamplerConfig
from .nets import PRESETS
from .spec import Spectrogram


def random_crops(
    pairs: list[tuple[np.ndarray, np.ndarray]], batch: int, length: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random aligned crops (B, length) of clean and noisy, divided by the noisy crop's peak."""
    clean_out, noisy_out = [], []
    for _ in range(batch):
        clean, noisy = pairs[rng.integers(len(pairs))]
        start = rng.integers(0, max(1, clean.shape[-1] - length))
        c, n = clean[start : start + length], noisy[start : start + length]
        scale = max(float(np.abs(n).max()), 1e-8)
        clean_out.append(c / scale)
        noisy_out.append(n / scale)
    return torch.from_numpy(np.stack(clean_out)), torch.from_numpy(np.stack(noisy_out))


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int | None = None,
    seconds: float | None = None,
    lr: float = 1e-3,
) -> list[float]:
    """Minimal Adam loop over (x0, y) spectrogram batches, for ``steps`` or ``seconds``.

    ``loss_fn(model, x0, y)`` returns per-example losses; returns the mean loss of every step.
    (Recipe training, with EMA, checkpoints and DDP, is ``audiodiff train``.)
    """
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    losses, start = [], time.monotonic()
    model.train()
    while (steps is None or len(losses) < steps) and (
        seconds is None or time.monotonic() - start < seconds
    ):
        x0, y = next(batches)
        loss = loss_fn(model, x0, y).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses


def crop_batches(
    pairs: list[tuple[np.ndarray, np.ndarray]], spec: Spectrogram, frames: int, batch: int, seed=0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless random (x0, y) compressed-spectrogram crops (B, 1, F, frames) of mono pairs."""
    rng = np.random.default_rng(seed)
    length = (frames - 1) * spec.config.hop_length
    while True:
        clean, noisy = random_crops(pairs, batch, length, rng)
        yield spec.analyse(clean), spec.analyse(noisy)


def tiny_storm_config() -> ModelConfig:
    """The bundled model's layout: StoRM, two ``ncsnpp_tiny`` networks, 5 steps, no corrector."""
    tiny = PRESETS["ncsnpp_tiny"]
    return ModelConfig(
        kind="storm",
        backbone=replace(tiny, in_channels=6),
        predictor=replace(tiny, in_channels=2, time_conditional=False),
        sampler=SamplerConfig(steps=5, corrector_steps=0),
    )
