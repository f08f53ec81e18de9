"""`audiodiff demo`: train a tiny model for a minute on the bundled pairs, enhance the example.

This exists until a pretrained model ships with the package. A minute of CPU training shows the
whole pipeline working end to end; it does not show the quality a properly trained model reaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .audio import read_audio, write_audio
from .checkpoint import build_model, save_pretrained
from .config import ModelConfig, SamplerConfig
from .enhance import Enhancer
from .metrics import si_sdr
from .models import storm_loss
from .nets import PRESETS
from .spec import Spectrogram

EXAMPLES = Path(__file__).resolve().parent / "assets" / "examples"
EXAMPLE_NOISY = EXAMPLES / "noisy" / "p287_004.wav"
EXAMPLE_CLEAN = EXAMPLES / "clean" / "p287_004.wav"
TRAIN_PAIRS = [
    (EXAMPLES / "clean" / n, EXAMPLES / "noisy" / n)
    for n in ("p287_004.wav", "p287_005.wav", "p287_006.wav")
]
CROP_FRAMES = 32


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


def demo_config() -> ModelConfig:
    """A tiny StoRM: its predictive stage learns something useful within a minute on a CPU."""
    tiny = PRESETS["ncsnpp_tiny"]
    return ModelConfig(
        kind="storm",
        backbone=replace(tiny, in_channels=6),
        predictor=replace(tiny, in_channels=2, time_conditional=False),
        sampler=SamplerConfig(steps=5, corrector_steps=0),
    )


def train_tiny(seconds: float, seed: int = 0) -> tuple[torch.nn.Module, ModelConfig, int]:
    """Fit the tiny StoRM on the bundled example pairs for ``seconds`` of wall time."""
    torch.manual_seed(seed)
    config = demo_config()
    model = build_model(config)
    pairs = [(read_audio(c)[0][0], read_audio(n)[0][0]) for c, n in TRAIN_PAIRS]
    batches = crop_batches(pairs, Spectrogram(config.spec), CROP_FRAMES, 4, seed)
    losses = fit(model, storm_loss, batches, seconds=seconds, lr=2e-3)
    return model.eval(), config, len(losses)


def run_demo(out_dir: Path, train_seconds: float = 60.0, steps: int = 5) -> dict:
    print(
        f"audiodiff demo: no pretrained model ships yet, so this trains a TINY StoRM model "
        f"(ncsnpp_tiny) for {train_seconds:.0f} s on the 3 bundled example pairs, then enhances "
        f"{EXAMPLE_NOISY.name}, one of them. Expect a working pipeline, not a good denoiser.",
        flush=True,
    )
    model, config, train_steps = train_tiny(train_seconds)
    model_dir = save_pretrained(model, config, out_dir / "tiny-model")
    print(f"trained {train_steps} steps; model saved to {model_dir}", flush=True)
    noisy, rate = read_audio(EXAMPLE_NOISY)
    clean, _ = read_audio(EXAMPLE_CLEAN)
    enhancer = Enhancer.from_pretrained(model_dir, device="cpu")
    result = {"noisy": si_sdr(clean[0], noisy[0])}
    for mode in ("predictive", "storm"):
        start = time.monotonic()
        enhanced = enhancer(noisy, rate, seed=0, mode=mode, steps=steps)
        rtf = (time.monotonic() - start) / (noisy.shape[-1] / rate)
        out_file = out_dir / f"enhanced_{mode}_{EXAMPLE_NOISY.name}"
        write_audio(out_file, enhanced, rate)
        result[mode] = si_sdr(clean[0], enhanced[0])
        print(f"wrote {out_file}  (mode {mode}, RTF {rtf:.2f})")
    print(
        f"SI-SDR against the clean reference: noisy {result['noisy']:.2f} dB, predictive "
        f"{result['predictive']:.2f} dB, storm ({steps} steps) {result['storm']:.2f} dB"
    )
    return result
