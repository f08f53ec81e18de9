"""``audiodiff stream``: enhance a file or the microphone block by block, as it would run live.

File input is paced in real time (a block is handed over when it would have been captured) unless
``--fast``; ``mic`` and ``speaker`` use the optional ``sounddevice`` package
(``pip install 'audiodiff[stream]'``). On a terminal a status line on stderr shows the real-time
factor, the algorithmic latency and the late blocks (compute longer than the block lasts); at the
end one summary line names the model and mode (``--json``: one JSON object on stdout instead).
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import STREAM_MODEL
from .cli_options import (
    add_block_options,
    add_inference_options,
    positive_float,
)
from .errors import InputError, UsageError

# = audiodiff.streaming.MODES[:5] (a test checks it); literal so the CLI starts without torch
MODES = ("predictive", "storm", "score", "diffusion", "bridge")

LIVE = ("mic", "speaker")


class StreamError(RuntimeError):
    """A problem the user can fix, reported in one line."""


def add_stream_parser(sub) -> argparse.ArgumentParser:
    """Register ``stream`` on an ``argparse`` sub-parser set; the handler is ``run_stream``."""
    p = sub.add_parser("stream", help="real-time (block-online) enhancement of a file or the mic")
    p.add_argument("--input", required=True, help="audio file, or 'mic'")
    p.add_argument("--output", required=True, help="audio file, or 'speaker'")
    add_inference_options(p, modes=MODES, model_default=STREAM_MODEL)
    p.add_argument(
        "--latency-ms",
        type=positive_float,
        help="algorithmic latency to aim for: picks block and look-ahead frames (default: none)",
    )
    add_block_options(p)
    pace = p.add_mutually_exclusive_group()
    pace.add_argument(
        "--realtime",
        dest="realtime",
        action="store_true",
        default=True,
        help="pace file input like a live source (the default)",
    )
    pace.add_argument("--fast", dest="realtime", action="store_false", help="as fast as possible")
    p.add_argument(
        "--duration",
        type=positive_float,
        help="stop after this many seconds (mic input; default: until Ctrl-C)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run_stream)
    return p


def run_stream(args: argparse.Namespace) -> int:
    """The ``stream`` command; returns the exit status: 2 for a bad option, 1 for an input or
    model that cannot be used (each a one-line error)."""
    try:
        return _run(args)
    except StreamError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except InputError as err:  # incl. AudioError: the input file or the model folder
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


def _frames(args, config, mode: str, steps: int) -> tuple[int | None, int | None]:
    from .streaming import frames_for_latency

    block, lookahead = None, None  # RealtimeEnhancer's defaults (they depend on the model)
    if args.latency_ms is not None:
        block, lookahead = frames_for_latency(args.latency_ms, config, mode, steps)
    block = args.block_frames if args.block_frames is not None else block
    return block, args.lookahead_frames if args.lookahead_frames is not None else lookahead


def build_enhancer(args: argparse.Namespace):
    """Model + the RealtimeEnhancer the arguments describe."""
    from .checkpoint import load_pretrained
    from .streaming import RealtimeEnhancer, resolve_mode

    model, config = load_pretrained(args.model)
    mode = resolve_mode(config, args.mode)
    steps = args.steps if args.steps is not None else config.sampler.steps
    block, lookahead = _frames(args, config, mode, steps)
    return RealtimeEnhancer(
        model,
        config,
        mode=mode,
        block_frames=block,
        context_frames=args.context_frames,
        lookahead_frames=lookahead,
        steps=steps,
        device=args.device,
        seed=args.seed,
        atten_lim_db=args.atten_lim_db,
        precision=args.precision,
    )


def _sounddevice():
    try:
        import sounddevice
    except (ImportError, OSError) as err:  # OSError: the PortAudio library is missing
        raise StreamError(
            f"mic/speaker need the optional 'sounddevice' package ({err}): "
            "pip install 'audiodiff[stream]'"
        ) from None
    return sounddevice


def file_chunks(wave: np.ndarray, rate: int, size: int, realtime: bool) -> Iterator[np.ndarray]:
    """(L,) -> chunks of ``size`` samples, each released when it would have been captured."""
    start = time.monotonic()
    for begin in range(0, wave.shape[-1], size):
        chunk = wave[begin : begin + size]
        if realtime:
            time.sleep(max(0.0, start + (begin + chunk.shape[-1]) / rate - time.monotonic()))
        yield chunk


def mic_chunks(rate: int, size: int, duration: float | None) -> Iterator[np.ndarray]:
    """Microphone blocks of ``size`` samples at ``rate`` until ``duration`` s or Ctrl-C."""
    sd = _sounddevice()
    blocks: queue.Queue = queue.Queue()

    def callback(data, frames, when, status):
        blocks.put(data[:, 0].copy())

    limit = None if duration is None else int(duration * rate)
    taken = 0
    with sd.InputStream(samplerate=rate, channels=1, blocksize=size, callback=callback):
        while limit is None or taken < limit:
            chunk = blocks.get()
            taken += chunk.shape[-1]
            yield chunk


def _status(rt, seconds: float, lag: float | None) -> None:
    """The live status line, redrawn in place; only on a terminal."""
    if not sys.stderr.isatty():
        return
    s = rt.stats.summary()
    behind = f"  behind {lag:.2f} s" if lag is not None else ""
    line = (
        f"\r[stream] {seconds:6.1f} s  RTF {s['rtf_last']:.2f} (mean {s['rtf_mean']:.2f}, "
        f"p90 {s['rtf_p90']:.2f})  latency {s['latency_ms']:.1f} ms  "
        f"late {s['late_blocks']}/{s['blocks']} blocks{behind} "
    )
    print(line, end="", file=sys.stderr, flush=True)


def stream_summary(rt, args, audio_seconds: float, cpu_seconds: float) -> dict:
    """What ran and how fast: the figures of the final line and of ``--json``."""
    s = rt.stats.summary()
    seconds = max(audio_seconds, 1e-9)
    return {
        "model": str(args.model),
        "mode": rt.mode,
        "audio_seconds": audio_seconds,
        "latency_ms": s["latency_ms"],
        "block_frames": rt.block_frames,
        "lookahead_frames": rt.lookahead_frames,
        "rtf_wall": rt.stats.total_compute / seconds,
        "rtf_cpu": cpu_seconds / seconds,
        "rtf_p90": s["rtf_p90"],
        "blocks": s["blocks"],
        "late_blocks": s["late_blocks"],
        "network_calls": s["network_calls"],
    }


def print_summary(summary: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(summary))
        return
    print(
        f"stream: {summary['audio_seconds']:.1f} s of audio, model {summary['model']}, "
        f"mode {summary['mode']}, latency {summary['latency_ms']:.1f} ms, "
        f"RTF {summary['rtf_wall']:.2f} (p90 {summary['rtf_p90']:.2f}), "
        f"CPU RTF {summary['rtf_cpu']:.2f}, "
        f"late blocks {summary['late_blocks']}/{summary['blocks']}",
        file=sys.stderr,
    )


def _source(args, rt) -> tuple[Iterator[np.ndarray], int | None]:
    """The input chunks at the model's rate, and the input file's own rate (None for the mic)."""
    from .audio import AudioError, read_audio, resample

    if args.input == "mic":
        return mic_chunks(rt.sample_rate, rt.block_samples, args.duration), None
    audio, rate = read_audio(args.input)
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # a float file beyond full scale: RealtimeEnhancer takes [-1, 1] only
        raise AudioError(
            args.input, f"samples reach {peak:.4g}, outside [-1, 1]: normalise the file first"
        )
    if audio.shape[0] > 1:
        print(f"note: {args.input}: {audio.shape[0]} channels mixed down to mono", file=sys.stderr)
    wave = resample(audio.mean(axis=0), rate, rt.sample_rate)
    return file_chunks(wave, rt.sample_rate, rt.block_samples, args.realtime), rate


def _run(args: argparse.Namespace) -> int:
    from .audio import resample, write_audio

    if args.output != "speaker" and Path(args.output).suffix.lower() not in (".wav", ".flac"):
        raise StreamError(f"--output {args.output}: a .wav/.flac file or 'speaker'")
    files = args.input != "mic" and args.output != "speaker"
    if files and Path(args.output).resolve() == Path(args.input).resolve():
        problem = "would overwrite the input; choose another file"
        raise UsageError(f"--output {args.output}", problem)
    if args.input == "mic" or args.output == "speaker":
        _sounddevice()  # fail early, in one line, when the optional package is missing
    speaker = _sounddevice().OutputStream if args.output == "speaker" else None
    try:
        rt = build_enhancer(args)
        chunks, file_rate = _source(args, rt)
    except InputError:
        raise
    except (FileNotFoundError, ValueError) as err:  # settings the model cannot run with
        raise StreamError(str(err)) from None
    print(
        f"streaming {args.input} -> {args.output}: mode {rt.mode}, block {rt.block_frames} "
        f"frames, look-ahead {rt.lookahead_frames}, window {rt.window_frames}, "
        f"latency {rt.latency_ms:.1f} ms",
        file=sys.stderr,
    )
    out = speaker(samplerate=rt.sample_rate, channels=1) if speaker else None
    pieces, pushed, shown, start = [], 0, 0.0, time.monotonic()
    cpu_start = time.process_time()
    paced = args.realtime or args.input == "mic"

    def lag() -> float | None:  # how far the output is behind real time (paced input only)
        return max(0.0, time.monotonic() - start - pushed / rt.sample_rate) if paced else None

    try:
        if out is not None:
            out.start()
        for chunk in chunks:
            enhanced = rt.push(chunk)
            pushed += chunk.shape[-1]
            if out is not None:
                out.write(enhanced[:, None])
            else:
                pieces.append(enhanced)
            if time.monotonic() - shown > 0.25:
                _status(rt, pushed / rt.sample_rate, lag())
                shown = time.monotonic()
    except KeyboardInterrupt:
        print("\ninterrupted: finishing the stream", file=sys.stderr)
    tail = rt.flush()
    if sys.stderr.isatty():
        print(file=sys.stderr)  # end the live status line
    summary = stream_summary(rt, args, pushed / rt.sample_rate, time.process_time() - cpu_start)
    if out is not None:
        out.write(tail[:, None])
        out.stop()
        out.close()
        print_summary(summary, args.json)
        return 0
    wave = np.concatenate(pieces + [tail])[rt.latency_samples :]  # aligned with the input
    rate = file_rate or rt.sample_rate
    write_audio(args.output, resample(wave, rt.sample_rate, rate), rate)
    print(f"wrote {args.output}", file=sys.stderr)
    print_summary(summary, args.json)
    return 0
