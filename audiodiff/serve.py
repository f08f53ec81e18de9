"""``audiodiff serve``: live enhancement over a websocket, and a web page that uses it.

One shared model, one :class:`~audiodiff.streaming.RealtimeEnhancer` per websocket connection;
the protocol is documented in ``audiodiff/web/PROTOCOL.md``. Binds loopback by default, and a
websocket opened by a page of another origin is refused (websockets are not covered by CORS).
Compute runs in worker threads so the event loop keeps serving the other clients; a bad message
gets a JSON error and the connection goes on. Needs the optional extra:
``pip install 'audiodiff[serve]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from . import STREAM_MODEL
from .cli_options import add_block_options, add_inference_options, positive_int

# = audiodiff.streaming.MODES (a test checks it); literal so the CLI starts without torch
MODES = ("predictive", "storm", "score", "diffusion", "bridge", "passthrough")

WEB = Path(__file__).parent / "web"
FORMATS = {"f32": np.dtype("<f4"), "s16": np.dtype("<i2")}
_SERVE_DEPS = "pip install 'audiodiff[serve]'"
log = logging.getLogger("audiodiff.serve")


@dataclass(frozen=True)
class ServeSettings:
    """What every connection's RealtimeEnhancer is built with, and the server's limits."""

    mode: str | None = None
    steps: int | None = None
    block_frames: int | None = None  # None: RealtimeEnhancer's default (8; 4 when causal)
    context_frames: int | None = None  # None: RealtimeEnhancer's default (16; 0 when causal)
    lookahead_frames: int | None = None  # None: 4, or a causal model's own look-ahead
    device: str = "auto"  # as Enhancer and RealtimeEnhancer: CUDA when available
    seed: int = 0
    precision: str = "fp32"
    atten_lim_db: float | None = None  # mix the input back in: at most this much attenuation
    max_frame_seconds: float = 1.0  # larger binary messages are refused
    max_backlog_seconds: float = 5.0  # audio waiting to be processed beyond this is refused
    stats_interval: float = 0.5  # seconds between JSON stats messages
    workers: int = 4  # connections computing at the same time
    model_name: str = ""  # shown by the page and in the log

    def enhancer(self, model, config):
        """A fresh :class:`~audiodiff.streaming.RealtimeEnhancer` with these settings."""
        from .streaming import RealtimeEnhancer

        return RealtimeEnhancer(
            model,
            config,
            mode=self.mode,
            steps=self.steps,
            block_frames=self.block_frames,
            context_frames=self.context_frames,
            lookahead_frames=self.lookahead_frames,
            device=self.device,
            seed=self.seed,
            precision=self.precision,
            atten_lim_db=self.atten_lim_db,
        )


def _imports():
    try:
        import anyio
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"audiodiff serve needs {err.name}: {_SERVE_DEPS}") from None
    return anyio


class Session:
    """The state of one websocket connection: its format and its own RealtimeEnhancer."""

    def __init__(self, websocket, model, config, settings: ServeSettings, limiter, client: int = 0):
        self.ws, self.model, self.config = websocket, model, config
        self.client = client  # the id the log names this connection by
        self.dropped = 0  # binary messages refused for overload
        self.started = time.monotonic()
        self.settings, self.limiter = settings, limiter
        self.enhancer = None
        self.dtype = FORMATS["f32"]
        self.max_samples = int(settings.max_frame_seconds * config.spec.sample_rate)
        self.max_backlog = int(settings.max_backlog_seconds * config.spec.sample_rate)
        self.received = self.sent = self.backlog = 0  # backlog: samples queued, not processed
        self.chunks = 0  # binary messages received on this connection
        self.last_stats = time.monotonic()

    async def run(self) -> None:
        """Read every message as it arrives (so websocket pings keep flowing even when compute
        falls behind) and process them in order in a second task; refuse audio beyond the
        backlog limit with an error (no reply) instead of letting the delay grow without end."""
        from starlette.websockets import WebSocketDisconnect

        client = self.ws.client
        log.info("client %d connected from %s", self.client, f"{client.host}:{client.port}")
        inbox: asyncio.Queue = asyncio.Queue()
        worker = asyncio.ensure_future(self.work(inbox))
        try:
            while not worker.done():
                message = await self.ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                data, chunk, samples = message.get("bytes"), None, 0
                if data is not None:
                    chunk, self.chunks = self.chunks, self.chunks + 1
                    if self.backlog >= self.max_backlog:
                        behind = 1000 * self.backlog / self.config.spec.sample_rate
                        refusal = f"server overloaded: {behind:.0f} ms of audio waiting; dropped"
                        if not self.dropped:
                            log.warning("client %d overloaded: %s", self.client, refusal)
                        self.dropped += 1
                        await self.error(refusal, chunk)
                        continue
                    samples = len(data) // self.dtype.itemsize
                    self.backlog += samples
                await inbox.put((message, chunk, samples))
        except WebSocketDisconnect:
            return
        finally:
            worker.cancel()
            self.log_disconnect()

    def log_disconnect(self) -> None:
        rate = self.config.spec.sample_rate
        late = self.enhancer.stats.late_blocks if self.enhancer is not None else 0
        log.info(
            "client %d disconnected after %.1f s: %.1f s of audio, %d late blocks, "
            "%d messages dropped for overload",
            self.client,
            time.monotonic() - self.started,
            self.received / rate,
            late,
            self.dropped,
        )

    async def work(self, inbox: asyncio.Queue) -> None:
        """Process queued messages in order; a failure is reported and the stream goes on."""
        while True:
            message, chunk, samples = await inbox.get()
            data = message.get("bytes")
            try:
                if data is not None:
                    await self.on_bytes(data, chunk)
                elif message.get("text") is not None:
                    await self.on_text(message["text"])
            except Exception as err:  # e.g. a model error: tell the client, keep serving
                try:
                    await self.error(f"processing failed: {type(err).__name__}: {err}", chunk)
                except Exception:  # the connection is gone
                    return
            finally:
                self.backlog -= samples

    async def error(self, message: str, chunk: int | None = None) -> None:
        """A JSON error; ``chunk``: the refused binary message's index on this connection."""
        error = {"type": "error", "message": message}
        if chunk is not None:
            error["chunk"] = chunk
        await self.ws.send_text(json.dumps(error))

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError:
            return await self.error("text messages must be JSON objects")
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "hello":
            return await self.hello(message)
        if kind == "end":
            return await self.end()
        await self.error(f"unknown message type {kind!r}: expected 'hello' or 'end'")

    async def hello(self, message: dict) -> None:
        """Start a (new) stream: format and rate check, a fresh RealtimeEnhancer."""

        model_rate = self.config.spec.sample_rate
        fmt, rate = message.get("format", "f32"), message.get("sample_rate", model_rate)
        if not isinstance(fmt, str) or fmt not in FORMATS:
            return await self.error(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
        if rate != self.config.spec.sample_rate:
            return await self.error(f"sample_rate must be {self.config.spec.sample_rate}")
        self.enhancer = self.settings.enhancer(self.model, self.config)
        self.dtype, self.received, self.sent = FORMATS[fmt], 0, 0
        rt = self.enhancer
        await self.ws.send_text(
            json.dumps(
                {
                    "type": "ready",
                    "format": fmt,
                    "sample_rate": rt.sample_rate,
                    "mode": rt.mode,
                    "latency_ms": rt.latency_ms,
                    "block_samples": rt.block_samples,
                    "max_frame_samples": self.max_samples,
                }
            )
        )

    def decode(self, data: bytes) -> np.ndarray | str:
        """PCM bytes -> (n,) float32 in [-1, 1], or the reason they are refused."""
        from .streaming import check_samples

        if self.enhancer is None:
            return "send a 'hello' message before audio"
        if len(data) % self.dtype.itemsize:
            return f"{len(data)} bytes is not a whole number of {self.dtype.itemsize}-byte samples"
        if len(data) // self.dtype.itemsize > self.max_samples:
            return f"frame of {len(data) // self.dtype.itemsize} samples exceeds the limit of " + (
                f"{self.max_samples} ({self.settings.max_frame_seconds:g} s)"
            )
        samples = np.frombuffer(data, self.dtype).astype(np.float32)
        if self.dtype.kind == "i":
            return samples / 32768.0
        try:  # NaN, Inf or beyond full scale: refused before it reaches the stream's state
            check_samples(samples)
        except ValueError as err:
            return f"{err}; frame dropped, the stream goes on"
        return samples

    def encode(self, samples: np.ndarray) -> bytes:
        if self.dtype.kind == "i":
            samples = np.clip(np.round(samples * 32768.0), -32768, 32767)
        return samples.astype(self.dtype).tobytes()

    async def on_bytes(self, data: bytes, chunk: int) -> None:
        samples = self.decode(data)
        if isinstance(samples, str):
            return await self.error(samples, chunk)
        anyio = _imports()
        out = await anyio.to_thread.run_sync(self.enhancer.push, samples, limiter=self.limiter)
        self.received += samples.size
        self.sent += out.size
        await self.ws.send_bytes(self.encode(out))
        if time.monotonic() - self.last_stats >= self.settings.stats_interval:
            await self.send_stats("stats")

    async def send_stats(self, kind: str) -> None:
        self.last_stats = time.monotonic()
        stats = {"received_samples": self.received, "sent_samples": self.sent}
        stats["backlog_ms"] = 1000 * self.backlog / self.config.spec.sample_rate
        stats.update(self.enhancer.stats.summary())
        await self.ws.send_text(json.dumps({"type": kind, **stats}))

    async def end(self) -> None:
        """End of stream: the last latency_samples samples, then the final stats."""
        if self.enhancer is None:
            return await self.error("no stream to end: send a 'hello' first")
        anyio = _imports()
        tail = await anyio.to_thread.run_sync(self.enhancer.flush, limiter=self.limiter)
        self.sent += tail.size
        await self.ws.send_bytes(self.encode(tail))
        await self.send_stats("end")


def create_app(model, config, settings: ServeSettings = ServeSettings()):
    """The Starlette ASGI app: ``/`` (page), ``/worklet.js``, ``/health`` and ``/ws``."""
    anyio = _imports()
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route, WebSocketRoute

    from .streaming import resolve_mode

    mode = resolve_mode(config, settings.mode)
    settings = replace(settings, mode=mode)
    probe = settings.enhancer(model, config)  # what /health describes
    limiter = anyio.CapacityLimiter(settings.workers)
    clients = itertools.count(1)

    async def page(request):
        return FileResponse(WEB / "index.html", media_type="text/html")

    async def worklet(request):
        return FileResponse(WEB / "worklet.js", media_type="text/javascript")

    async def health(request):
        """What the page shows before Start: model, mode, rate and algorithmic latency."""
        return JSONResponse(
            {
                "model": settings.model_name,
                "mode": mode,
                "sample_rate": probe.sample_rate,
                "latency_ms": probe.latency_ms,
                "block_frames": probe.block_frames,
                "lookahead_frames": probe.lookahead_frames,
            }
        )

    async def websocket(ws):
        origin = ws.headers.get("origin")
        if origin and urlsplit(origin).netloc != ws.headers.get("host"):
            await ws.close(code=1008)  # another site's page in the user's browser: refused
            return
        await ws.accept()
        await Session(ws, model, config, settings, limiter, next(clients)).run()

    routes = [
        Route("/", page),
        Route("/worklet.js", worklet),
        Route("/health", health),
        WebSocketRoute("/ws", websocket),
    ]
    app = Starlette(routes=routes)
    app.state.mode, app.state.latency_ms = mode, probe.latency_ms
    return app


@contextlib.contextmanager
def background_server(app, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a thread; yields its ``http://host:port``; stops on exit."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    config = uvicorn.Config(app, log_level="warning", ws_max_size=16 * 2**20, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def add_serve_parser(sub) -> argparse.ArgumentParser:
    """Register ``serve`` on an ``argparse`` sub-parser set; the handler is ``run_serve``."""
    p = sub.add_parser("serve", help="live enhancement server (websocket) with a web page")
    p.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: %(default)s, loopback)"
    )
    p.add_argument("--port", type=positive_int, default=8000, help="(default: %(default)s)")
    add_inference_options(p, modes=MODES, model_default=STREAM_MODEL)
    add_block_options(p)
    p.add_argument(
        "--workers",
        type=positive_int,
        default=4,
        help="connections computing at once (default: %(default)s)",
    )
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    """The ``serve`` command: load the model once, serve until Ctrl-C."""
    try:
        _imports()
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import uvicorn

    from .checkpoint import load_pretrained
    from .enhance import pick_device

    model, config = load_pretrained(args.model, device=pick_device(args.device))
    settings = ServeSettings(
        mode=args.mode,
        steps=args.steps,
        block_frames=args.block_frames,
        context_frames=args.context_frames,
        lookahead_frames=args.lookahead_frames,
        device=args.device,
        seed=args.seed,
        precision=args.precision,
        atten_lim_db=args.atten_lim_db,
        workers=args.workers,
        model_name=str(args.model),
    )
    app = create_app(model, config, settings)
    logging.basicConfig(format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    log.setLevel(logging.INFO)
    if not _is_loopback(args.host):
        print(
            f"warning: binding {args.host}: anyone who can reach it can use the server, and "
            "browsers only allow the microphone on https or localhost pages",
            file=sys.stderr,
        )
    print(
        f"audiodiff serve: http://{args.host}:{args.port}/  model {args.model}, "
        f"mode {app.state.mode}, latency {app.state.latency_ms:.1f} ms  (Ctrl-C stops)",
        file=sys.stderr,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


async def stream_file(
    url: str,
    samples: np.ndarray,
    *,
    chunk: int,
    realtime: bool = True,
    fmt: str = "f32",
    rate: int = 16000,
    timeout: float = 120.0,
) -> tuple[np.ndarray, list[float], dict, list[str]]:
    """A minimal Python client: stream (L,) samples at ``rate`` (the model's) to ``url``
    (``ws://.../ws``); ``s16`` scales by 32768 and clips, as the server does.

    ``realtime``: send a chunk when it would have been captured; else send the next chunk as
    soon as the previous one's reply arrived. Returns the output (L + latency,), the round trip
    (seconds) of every chunk, the final stats and the error messages received. The server sends
    one binary reply per binary message, in order, so a chunk's round trip is send -> its reply.
    """
    import websockets

    dtype, out, trips, errors, sent = FORMATS[fmt], [], [], [], []
    replied = asyncio.Semaphore(1)
    async with websockets.connect(url, max_size=2**24) as ws:
        await ws.send(json.dumps({"type": "hello", "format": fmt, "sample_rate": rate}))
        ready = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if ready.get("type") != "ready":
            raise RuntimeError(f"server refused the stream: {ready}")

        async def sender() -> None:
            start = time.monotonic()
            for begin in range(0, len(samples), chunk):
                piece = samples[begin : begin + chunk]
                if realtime:
                    due = start + (begin + len(piece)) / rate
                    await asyncio.sleep(max(0.0, due - time.monotonic()))
                else:
                    await replied.acquire()
                scaled = piece
                if dtype.kind == "i":  # the server's inverse: / 32768 in, x 32768 out
                    scaled = np.clip(np.round(piece * 32768.0), -32768, 32767)
                sent.append(time.monotonic())
                await ws.send(scaled.astype(dtype).tobytes())
            await ws.send(json.dumps({"type": "end"}))

        async def receiver() -> dict:
            refused, answered = set(), 0  # chunk indices refused; chunks answered or refused
            while True:
                msg = await ws.recv()
                if isinstance(msg, bytes):
                    while answered in refused:
                        answered += 1
                    if answered < len(sent):  # else: the tail that answers "end"
                        trips.append(time.monotonic() - sent[answered])
                    answered += 1
                    out.append(np.frombuffer(msg, dtype))
                    replied.release()
                elif (data := json.loads(msg)).get("type") == "end":
                    return data
                elif data.get("type") == "error":
                    errors.append(data["message"])
                    if "chunk" in data:
                        refused.add(data["chunk"])
                        replied.release()

        sending = asyncio.ensure_future(sender())
        try:
            final = await asyncio.wait_for(receiver(), timeout)
        finally:
            sending.cancel()
    scale = 1 / 32768 if dtype.kind == "i" else 1
    return np.concatenate(out).astype(np.float32) * scale, trips, final, errors


if __name__ == "__main__":  # ``python -m audiodiff.serve --model DIR ...`` (as ``audiodiff serve``)
    _parser = argparse.ArgumentParser(prog="python -m audiodiff.serve")
    add_serve_parser(_parser.add_subparsers(dest="command"))
    _args = _parser.parse_args(["serve", *sys.argv[1:]])
    from .cli_options import apply_threads

    apply_threads(_args.threads)
    sys.exit(_args.func(_args))
