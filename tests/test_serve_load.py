"""The websocket server under load and abuse: 20 concurrent clients, no cross-talk, bad frames.

Every client streams its own signal; each must get back exactly its own enhanced signal. The 20
real-time clients use the ``passthrough`` mode (the STFT round trip, output = input delayed), so
a client receiving any other client's audio fails exactly; a few unpaced clients run a real
NCSN++ and must match an offline RealtimeEnhancer on their own input. All bounded by timeouts.
``eval/load_test.py`` runs the same for 10 s and prints latency percentiles.
"""

import asyncio
import importlib.util
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from audiodiff.checkpoint import build_model
from audiodiff.config import ModelConfig
from audiodiff.nets import PRESETS
from audiodiff.quickfit import tiny_storm_config
from audiodiff.serve import ServeSettings, background_server, create_app, stream_file
from audiodiff.streaming import RealtimeEnhancer

websockets = pytest.importorskip("websockets")  # in the [serve] and [test] extras
PAIRS = Path(__file__).parent / "data" / "pairs"
LATENCY = 509 + 11 * 128  # block 8, look-ahead 4


def _load_test_script():
    path = Path(__file__).resolve().parents[1] / "eval" / "load_test.py"
    spec = importlib.util.spec_from_file_location("load_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


client_signal = _load_test_script().client_signal  # the same client signals as the benchmark


async def run_clients(url: str, signals: list, timeout: float, **kwargs) -> list:
    ws_url = url.replace("http", "ws") + "/ws"
    jobs = [stream_file(ws_url, s, chunk=1024, timeout=timeout, **kwargs) for s in signals]
    return await asyncio.wait_for(asyncio.gather(*jobs), timeout)


def percentiles(trips: list[float]) -> dict:
    return {p: 1000 * float(np.percentile(trips, p)) for p in (50, 90, 99)}


def test_twenty_realtime_clients_get_their_own_audio_back():
    config = tiny_storm_config()
    app = create_app(None, config, ServeSettings(mode="passthrough", workers=4))
    signals = [client_signal(i, 3.0) for i in range(20)]
    with background_server(app) as url:
        results = asyncio.run(run_clients(url, signals, timeout=90, realtime=True))
    trips = []
    for signal, (out, client_trips, final, errors) in zip(signals, results):
        assert errors == []
        assert out.shape == (len(signal) + LATENCY,)
        np.testing.assert_allclose(out[LATENCY:], signal, atol=2e-6)  # its own, and only its own
        assert final["received_samples"] == len(signal) and final["latency_ms"] == LATENCY / 16
        trips += client_trips
    figures = percentiles(trips)
    print(f"\n20 clients x 3 s, passthrough: round trip p50/p90/p99 {figures} ms")
    assert len(trips) == 20 * -(-48000 // 1024)  # every chunk answered
    assert figures[50] < 10_000  # bounded (the figures depend on the machine's load)


def test_model_clients_match_offline_processing_of_their_input():
    torch.manual_seed(0)
    micro = replace(PRESETS["ncsnpp_tiny"], nf=8, ch_mult=(1, 2), num_res_blocks=1)
    predictor = replace(micro, in_channels=2, time_conditional=False)
    config = ModelConfig(kind="predictive", backbone=None, predictor=predictor)
    model = build_model(config).eval()
    frames = dict(block_frames=16, context_frames=4, lookahead_frames=2)
    app = create_app(model, config, ServeSettings(mode="predictive", workers=3, **frames))
    signals = [client_signal(i, 1.0) for i in range(3)]
    with background_server(app) as url:
        results = asyncio.run(run_clients(url, signals, timeout=120, realtime=False))
    outs = [r[0] for r in results]
    for signal, out in zip(signals, outs):
        offline = RealtimeEnhancer(model, config, mode="predictive", **frames)
        expected = np.concatenate([offline.push(signal), offline.flush()])
        np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert not np.allclose(outs[0], outs[1], atol=1e-4)  # the clients' outputs do differ


async def expect_error(ws, pattern: str, chunk: int | None = None) -> None:
    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert reply["type"] == "error" and pattern in reply["message"], reply
    assert reply.get("chunk") == chunk  # a refused binary message is identified by its index


async def abuse(url: str) -> None:
    """Every kind of bad message, on one connection that must keep working."""
    async with websockets.connect(url, max_size=2**24) as ws:
        await ws.send(np.zeros(256, "<f4").tobytes())
        await expect_error(ws, "hello", chunk=0)
        for text, pattern in [("not json", "JSON"), ('{"type": "bogus"}', "unknown"), ("[1]", "")]:
            await ws.send(text)
            await expect_error(ws, pattern)
        await ws.send(json.dumps({"type": "hello", "format": "f64"}))
        await expect_error(ws, "format")
        await ws.send(json.dumps({"type": "hello", "format": "s16", "sample_rate": 16000}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(b"\x00\x01\x02")  # odd byte count for int16
        await expect_error(ws, "whole number", chunk=1)
        await ws.send(np.zeros(16001, "<i2").tobytes())  # more than 1 s
        await expect_error(ws, "exceeds", chunk=2)
        await ws.send(json.dumps({"type": "hello", "format": "f32", "sample_rate": 16000}))
        ready = json.loads(await ws.recv())
        await ws.send(np.array([0.1, np.nan, 0.2], "<f4").tobytes())
        await expect_error(ws, "finite", chunk=3)
        good = (0.1 * np.sin(np.arange(4000) / 5)).astype("<f4")
        await ws.send(good.tobytes())  # still alive: a valid frame gets its reply
        reply = await asyncio.wait_for(ws.recv(), 30)
        assert isinstance(reply, bytes) and len(reply) == good.nbytes
        await ws.send(json.dumps({"type": "end"}))
        tail = await asyncio.wait_for(ws.recv(), 30)
        assert len(tail) == 4 * round(ready["latency_ms"] * 16)
        assert json.loads(await ws.recv())["type"] == "end"


def test_malformed_and_oversized_frames_get_errors_and_the_server_survives():
    config = tiny_storm_config()
    app = create_app(None, config, ServeSettings(mode="passthrough"))
    with background_server(app) as url:
        asyncio.run(asyncio.wait_for(abuse(url.replace("http", "ws") + "/ws"), 60))
        results = asyncio.run(run_clients(url, [client_signal(0, 0.5)], 30, realtime=False))
        assert results[0][3] == []  # a new client is served normally afterwards
        with pytest.raises(Exception, match="403"):  # another site's page may not use it
            asyncio.run(connect_from(url.replace("http", "ws") + "/ws", origin="http://a.b"))
        host = url.split("//")[1]
        asyncio.run(connect_from(url.replace("http", "ws") + "/ws", origin=f"http://{host}"))


async def connect_from(url: str, origin: str) -> None:
    async with websockets.connect(url, origin=origin):
        pass


class SlowIdentity(torch.nn.Module):
    """A 'predictor' that takes 150 ms per block of 64 ms: the server cannot keep up."""

    def forward(self, y):
        import time

        time.sleep(0.15)
        return y


def test_an_overloaded_server_sheds_audio_with_errors_and_keeps_the_connection(caplog):
    caplog.set_level(logging.INFO, logger="audiodiff.serve")
    micro = replace(PRESETS["ncsnpp_tiny"], in_channels=2, time_conditional=False)
    config = ModelConfig(kind="predictive", backbone=None, predictor=micro)
    settings = ServeSettings(mode="predictive", max_backlog_seconds=0.5)
    app = create_app(SlowIdentity(), config, settings)
    signal = client_signal(0, 2.0)
    with background_server(app) as url:
        results = asyncio.run(run_clients(url, [signal], timeout=60, realtime=True))
    out, _, final, errors = results[0]
    assert errors and all("overloaded" in e for e in errors)
    received = final["received_samples"]  # the refused chunks are missing, nothing else
    assert final["type"] == "end" and 0 < received <= len(signal) - 256 * len(errors)
    assert out.shape == (received + LATENCY,)
    # the server's log names the client in its connect, overload and disconnect lines
    lines = [r.getMessage() for r in caplog.records if r.name == "audiodiff.serve"]
    assert lines[0].startswith("client 1 connected from 127.0.0.1:")
    assert sum(line.startswith("client 1 overloaded: server overloaded") for line in lines) == 1
    dropped = f"{len(errors)} messages dropped for overload"
    assert lines[-1].startswith("client 1 disconnected after") and dropped in lines[-1]
