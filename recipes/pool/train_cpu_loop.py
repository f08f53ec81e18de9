"""Train the tiny StoRM model on the shared pool with on-the-fly mixing, on a CPU, resumably.

This plain loop (Adam + EMA, atomic checkpoints every few minutes) trained the first bundled model
before the Lightning trainer existed. Run from the repository root:

    python recipes/pool/train_cpu_loop.py --pool ../shared/data/train_pool --out runs/pool-tiny \
        --hours 1.5

Re-running with the same --out continues from its last checkpoint (weights, EMA, optimiser, step).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

from audiodiff.checkpoint import save_pretrained
from audiodiff.data import MixConfig, OnTheFlyMixDataset, list_audio_files
from audiodiff.demo import demo_config
from audiodiff.models import storm_loss
from audiodiff.spec import Spectrogram


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema ← decay·ema + (1 − decay)·model, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


def save_state(out: Path, model, ema, optimiser, step: int, config) -> None:
    save_pretrained(ema, config, out / "model", extra={"train_steps": step})
    state = {
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimiser": optimiser.state_dict(),
        "step": step,
    }
    tmp = out / "train_state.pt.tmp"
    torch.save(state, tmp)
    tmp.replace(out / "train_state.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", required=True, help="folder with clean/, noise/, rir/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--hours", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--save-minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    config = demo_config()
    from audiodiff.checkpoint import build_model

    model = build_model(config)
    ema = copy.deepcopy(model).eval()
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    step = 0
    if (out / "train_state.pt").exists():
        state = torch.load(out / "train_state.pt", weights_only=True)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimiser.load_state_dict(state["optimiser"])
        step = state["step"]
        print(f"resumed at step {step}", flush=True)

    pool = Path(args.pool)
    mix = MixConfig(snr_db=(-5, 20), gain_db=(-6, 6), reverb_prob=0.3, max_rt60_s=1.0)
    crop = (args.frames - 1) * config.spec.hop_length
    dataset = OnTheFlyMixDataset(
        list_audio_files(pool / "clean"),
        list_audio_files(pool / "noise"),
        list_audio_files(pool / "rir"),
        config=mix,
        crop_samples=crop,
        seed=args.seed,
    )
    spec = Spectrogram(config.spec)
    start = last_save = time.monotonic()
    epoch, losses = step // len(dataset), []
    while time.monotonic() - start < args.hours * 3600:
        dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, shuffle=False)
        for clean, noisy in loader:
            loss = storm_loss(
                model, spec.analyse(clean), spec.analyse(noisy), score_task_prob=0.1
            ).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimiser.step()
            ema_update(ema, model, 0.999 if step > 1000 else 0.99)
            step += 1
            losses.append(loss.item())
            if step % 50 == 0:
                rate = len(losses) / (time.monotonic() - start)
                print(
                    f"step {step} loss {sum(losses[-50:]) / 50:.2f} ({rate:.2f} steps/s)",
                    flush=True,
                )
            if time.monotonic() - last_save > args.save_minutes * 60:
                save_state(out, model, ema, optimiser, step, config)
                last_save = time.monotonic()
            if time.monotonic() - start > args.hours * 3600:
                break
        epoch += 1
    save_state(out, model, ema, optimiser, step, config)
    print(f"done: {step} steps", flush=True)


if __name__ == "__main__":
    main()
