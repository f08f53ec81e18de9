"""Load test of ``audiodiff serve``: N concurrent websocket clients, latency percentiles.

    python eval/load_test.py [--clients 20] [--seconds 10] [--mode passthrough] [--model DIR]
        [--block-frames B] [--lookahead-frames A] [--fast] [--url ws://HOST:PORT/ws]

Without ``--url`` the server runs in-process on a free loopback port, with ``--model`` or else an
untrained tiny demo StoRM. Each client streams its own signal (a noisy excerpt + its own tone),
paced in real time unless ``--fast`` (then each chunk waits for the previous reply). Printed:
round-trip latency percentiles (chunk sent -> its enhanced reply) over all chunks, the
algorithmic latency and their sum, the server's RTF and late blocks, and the cross-talk check:
clients whose output equals an offline RealtimeEnhancer run on their own input (all clients in
passthrough mode, ``--verify`` of them otherwise). Every wait has a timeout: it stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from audiodiff.audio import read_audio
from audiodiff.serve import ServeSettings, background_server, create_app, stream_file
from audiodiff.streaming import MODES, RealtimeEnhancer

PAIRS = Path(__file__).resolve().parent.parent / "tests" / "data" / "pairs"


def client_signal(index: int, seconds: float) -> np.ndarray:
    """A different signal per client: a noisy file excerpt + a client-specific tone, (L,)."""
    noisy, _ = read_audio(PAIRS / "noisy" / f"p287_00{1 + index % 2}.wav")
    length = int(seconds * 16000)
    t = np.arange(length) / 16000
    speech = np.resize(np.roll(noisy[0], -1601 * index), length)
    return (0.7 * speech + 0.05 * np.sin(2 * np.pi * (150 + 37 * index) * t)).astype(np.float32)


def load_model(path: str | None):
    from audiodiff.checkpoint import build_model, load_pretrained
    from audiodiff.quickfit import tiny_storm_config

    if path:
        return load_pretrained(path)
    torch.manual_seed(0)
    config = tiny_storm_config()
    return build_model(config).eval(), config


@contextlib.contextmanager
def server_process(model, config, args):
    """``python -m audiodiff.serve`` on a free loopback port in a child process; yields its URL."""
    from audiodiff.checkpoint import build_model, save_pretrained

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as probe:
        model_dir = save_pretrained(
            model if model is not None else build_model(config), config, tmp
        )
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        command = [sys.executable, "-m", "audiodiff.serve", "--model", str(model_dir)]
        command += ["--port", str(port), "--mode", args.mode, "--threads", str(args.threads)]
        command += ["--workers", str(args.workers)]
        for flag, value in frame_settings(args).items():  # unset: the server's model default
            command += [f"--{flag.replace('_', '-')}", str(value)] if value is not None else []
        command += ["--steps", str(args.steps)] if args.steps is not None else []
        child = subprocess.Popen(command)
        try:
            wait_for_health(f"http://127.0.0.1:{port}/health", child, timeout=120)
            yield f"http://127.0.0.1:{port}"
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=10)


def frame_settings(args) -> dict:
    """The streaming frames asked for; None leaves RealtimeEnhancer's default for the model."""
    names = ("block_frames", "lookahead_frames", "context_frames")
    return {name: getattr(args, name) for name in names}


def wait_for_health(url: str, child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the server exited with status {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not answer {url} within {timeout:g} s")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--mode", choices=MODES, default="passthrough")
    p.add_argument("--model", help="model folder (default: an untrained tiny demo StoRM)")
    p.add_argument("--steps", type=int)
    p.add_argument("--block-frames", type=int, help="default 8 (4 for a causal model)")
    p.add_argument("--lookahead-frames", type=int, help="default 4 (a causal model's own)")
    p.add_argument("--context-frames", type=int, help="default 16 (none for a causal model)")
    p.add_argument("--chunk", type=int, default=1024, help="samples per websocket message")
    p.add_argument("--fast", action="store_true", help="no real-time pacing (closed loop)")
    p.add_argument("--url", help="an already running server's ws://.../ws")
    p.add_argument("--in-process", action="store_true", help="server thread in this process")
    p.add_argument("--verify", type=int, default=3, help="clients checked offline (model modes)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--timeout", type=float, default=600.0, help="give up after this many s")
    return p.parse_args(argv)


async def run_clients(url: str, signals: list[np.ndarray], args) -> list:
    jobs = [
        stream_file(url, s, chunk=args.chunk, realtime=not args.fast, timeout=args.timeout)
        for s in signals
    ]
    return await asyncio.wait_for(asyncio.gather(*jobs), args.timeout)


def report(args, results, signals, latency_ms: float, wall: float, checked: int, ok: int):
    trips = 1000 * np.concatenate([np.asarray(r[1]) for r in results])
    finals = [r[2] for r in results]
    errors = sum(len(r[3]) for r in results)
    overloaded = sum("overloaded" in e for r in results for e in r[3])
    pct = {p: float(np.percentile(trips, p)) for p in (50, 90, 99)}
    pace = "as fast as allowed" if args.fast else "paced in real time"
    print(f"{args.clients} clients x {args.seconds:g} s, mode {args.mode}, {pace}")
    print(f"algorithmic latency {latency_ms:.1f} ms")
    print("round trip (chunk -> reply) " + "  ".join(f"p{p} {v:.1f} ms" for p, v in pct.items()))
    total = "  ".join(f"p{p} {latency_ms + v:.1f} ms" for p, v in pct.items())
    print(f"end to end (algorithmic + round trip) {total}")
    blocks = sum(f["blocks"] for f in finals)
    late = sum(f["late_blocks"] for f in finals)
    rtf = np.mean([f["rtf_mean"] for f in finals])
    print(
        f"server: {blocks} blocks, {late} late, mean per-client RTF {rtf:.3f}, errors {errors} "
        f"({overloaded} chunks refused as overload)"
    )
    audio = sum(len(s) for s in signals) / 16000
    print(f"throughput {audio / wall:.1f} s of audio per s (wall {wall:.1f} s)")
    print(f"cross-talk check: {ok}/{checked} clients match offline processing of their own input")
    return ok == checked and errors == overloaded


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.mode == "passthrough" and not args.model:
        from audiodiff.quickfit import tiny_storm_config

        model, config = None, tiny_storm_config()
    else:
        model, config = load_model(args.model)
    frames = frame_settings(args)
    signals = [client_signal(i, args.seconds) for i in range(args.clients)]
    settings = ServeSettings(mode=args.mode, steps=args.steps, workers=args.workers, **frames)
    if args.url:
        server = contextlib.nullcontext(args.url)
    elif args.in_process:
        server = background_server(create_app(model, config, settings))
    else:
        server = server_process(model, config, args)
    with server as base:
        url = base if args.url else base.replace("http", "ws") + "/ws"
        start = time.monotonic()
        results = asyncio.run(run_clients(url, signals, args))
        wall = time.monotonic() - start
    checked = args.clients if args.mode == "passthrough" else min(args.verify, args.clients)
    ok = shed = 0
    for signal, (out, _, _, errors) in list(zip(signals, results))[:checked]:
        if errors:  # overloaded: refused chunks are missing, the output is not comparable
            shed += 1
            continue
        offline = RealtimeEnhancer(model, config, mode=args.mode, steps=args.steps, **frames)
        expected = np.concatenate([offline.push(signal), offline.flush()])
        ok += expected.shape == out.shape and np.allclose(expected, out, atol=1e-5)
    if shed:
        print(f"{shed} of the checked clients had audio refused (server overloaded): not compared")
    latency = RealtimeEnhancer(model, config, mode=args.mode, steps=args.steps, **frames).latency_ms
    return 0 if report(args, results, signals, latency, wall, checked - shed, ok) else 1


if __name__ == "__main__":
    sys.exit(main())
