"""Overfit a tiny StoRM on one real pair, then report SI-SDR of each inference mode on that pair.

    python eval/storm_overfit.py [--steps 400] [--pair p287_001.wav]

A sanity check of the whole StoRM stack (losses, modes, samplers), not a quality claim.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from audiodiff.audio import read_audio
from audiodiff.checkpoint import build_model
from audiodiff.enhance import Enhancer
from audiodiff.metrics import si_sdr
from audiodiff.models import storm_loss
from audiodiff.quickfit import crop_batches, fit, tiny_storm_config
from audiodiff.spec import Spectrogram

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "pairs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--pair", default="p287_001.wav")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = tiny_storm_config()
    model = build_model(config)
    clean, rate = read_audio(PAIRS / "clean" / args.pair)
    noisy, _ = read_audio(PAIRS / "noisy" / args.pair)
    batches = crop_batches([(clean[0], noisy[0])], Spectrogram(config.spec), 32, 4)

    def loss(m, x0, y):  # half the examples also train the plain SGMSE+ task (score mode)
        return storm_loss(m, x0, y, score_task_prob=0.5)

    losses = fit(model, loss, batches, steps=args.steps, lr=2e-3)
    first, last = np.mean(losses[:20]), np.mean(losses[-20:])
    print(f"trained {args.steps} steps: loss {first:.1f} -> {last:.1f}")
    enhancer = Enhancer(model.eval(), config)
    print(f"SI-SDR noisy {si_sdr(clean[0], noisy[0]):.2f} dB")
    for mode, steps, corrector in (("predictive", 0, 0), ("storm", 5, 0), ("score", 30, 1)):
        out = enhancer(noisy[0], rate, seed=0, mode=mode, steps=steps, corrector_steps=corrector)
        print(f"SI-SDR {mode} (N={steps}, corrector {corrector}) {si_sdr(clean[0], out):.2f} dB")


if __name__ == "__main__":
    main()
