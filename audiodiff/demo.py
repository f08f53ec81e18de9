"""`audiodiff demo`: train a tiny model for a minute on the bundled pairs, enhance the example.

This exists until a pretrained model ships with the package. A minute of CPU training shows the
whole pipeline working end to end; it does not show the quality a properly trained model reaches.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from .audio import read_audio, write_audio
from .checkpoint import build_model, save_pretrained
from .config import ModelConfig, SamplerConfig
from .enhance import Enhancer
from .metrics import si_sdr
from .models import score_matching_loss
from .nets import PRESETS
from .spec import Spectrogram

EXAMPLES = Path(__file__).resolve().parent / "assets" / "examples"
EXAMPLE_NOISY = EXAMPLES / "noisy" / "p287_004.wav"
EXAMPLE_CLEAN = EXAMPLES / "clean" / "p287_004.wav"
TRAIN_PAIRS = [
    (EXAMPLES / "clean" / n, EXAMPLES / "noisy" / n)
    for n in ("p287_004.wav", "p287_005.wav", "p287_006.wav")
]
CROP_FRAMES = 64


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


def train_tiny(seconds: float, seed: int = 0) -> tuple[torch.nn.Module, ModelConfig, int]:
    """Fit ncsnpp_tiny with denoising score matching for ``seconds`` of wall time."""
    torch.manual_seed(seed)
    config = ModelConfig(
        backbone=PRESETS["ncsnpp_tiny"], sampler=SamplerConfig(steps=30, corrector_steps=1)
    )
    model = build_model(config)
    spec = Spectrogram(config.spec)
    pairs = [(read_audio(c)[0][0], read_audio(n)[0][0]) for c, n in TRAIN_PAIRS]
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    length = (CROP_FRAMES - 1) * config.spec.hop_length
    steps, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        clean, noisy = random_crops(pairs, 4, length, rng)
        x0, y = spec.analyse(clean), spec.analyse(noisy)  # (B, 1, F, T)
        loss = score_matching_loss(model, x0, y, y).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    return model.eval(), config, steps


def run_demo(out_dir: Path, train_seconds: float = 60.0, steps: int = 30) -> dict:
    print(
        f"audiodiff demo: no pretrained model ships yet, so this trains a TINY model "
        f"(ncsnpp_tiny) for {train_seconds:.0f} s on the 3 bundled example pairs, then enhances "
        f"{EXAMPLE_NOISY.name}. Expect a working pipeline, not a good denoiser.",
        flush=True,
    )
    model, config, train_steps = train_tiny(train_seconds)
    model_dir = save_pretrained(model, config, out_dir / "tiny-model")
    print(f"trained {train_steps} steps; model saved to {model_dir}", flush=True)
    noisy, rate = read_audio(EXAMPLE_NOISY)
    clean, _ = read_audio(EXAMPLE_CLEAN)
    enhancer = Enhancer.from_pretrained(model_dir, device="cpu")
    start = time.monotonic()
    enhanced = enhancer(noisy, rate, seed=0, steps=steps)
    wall = time.monotonic() - start
    out_file = out_dir / "enhanced_p287_004.wav"
    write_audio(out_file, enhanced, rate)
    result = {
        "si_sdr_noisy": si_sdr(clean[0], noisy[0]),
        "si_sdr_enhanced": si_sdr(clean[0], enhanced[0]),
        "rtf": wall / (noisy.shape[-1] / rate),
    }
    print(
        f"wrote {out_file}\nSI-SDR noisy {result['si_sdr_noisy']:.2f} dB -> enhanced "
        f"{result['si_sdr_enhanced']:.2f} dB  (PC sampler, {steps} steps, RTF {result['rtf']:.2f})"
    )
    return result
