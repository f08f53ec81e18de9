"""What ``serve`` and ``stream`` run with: int16 scaling both ways, the attenuation limit, the
causal default model and one default-device rule."""

import argparse
import asyncio

import numpy as np
import pytest

from audiodiff import STREAM_MODEL
from audiodiff.checkpoint import bundled_models
from audiodiff.quickfit import tiny_storm_config
from audiodiff.serve import (
    ServeSettings,
    add_serve_parser,
    background_server,
    create_app,
    stream_file,
)
from audiodiff.stream_cli import add_stream_parser
from audiodiff.streaming import RealtimeEnhancer

pytest.importorskip("websockets")  # in the [serve] and [test] extras
LATENCY = 509 + 11 * 128  # passthrough, block 8, look-ahead 4


def _stream(app, signal: np.ndarray, fmt: str) -> np.ndarray:
    with background_server(app) as url:
        job = stream_file(url.replace("http", "ws") + "/ws", signal, chunk=1024, fmt=fmt,
                          realtime=False, timeout=60)  # fmt: skip
        out, _, _, errors = asyncio.run(job)
    assert errors == []
    return out[LATENCY:]


def test_int16_frames_keep_the_level_exactly():
    """The client scales by 32768 as the server does: no 32767/32768 gain on the round trip."""
    signal = (0.5 * np.sin(np.arange(16000) / 7)).astype(np.float32)
    app = create_app(None, tiny_storm_config(), ServeSettings(mode="passthrough"))
    out = _stream(app, signal, "s16")
    gain = float(np.dot(out, signal) / np.dot(signal, signal))
    assert abs(gain - 1) < 5e-6, gain  # 32767/32768 would be 3e-5 off
    assert np.abs(out - signal).max() <= 1.01 / 32768  # one rounding each way at most


def test_serve_attenuation_limit_mixes_the_input_back_in():
    config = tiny_storm_config()
    signal = (0.3 * np.sin(np.arange(12000) / 9)).astype(np.float32)
    settings = ServeSettings(mode="passthrough", atten_lim_db=6.0)
    out = _stream(create_app(None, config, settings), signal, "f32")
    offline = RealtimeEnhancer(None, config, mode="passthrough", atten_lim_db=6.0)
    expected = np.concatenate([offline.push(signal), offline.flush()])[LATENCY:]
    np.testing.assert_allclose(out, expected, atol=1e-6)
    parser = argparse.ArgumentParser()
    add_serve_parser(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["serve", "--atten-lim-db", "12"]).atten_lim_db == 12.0
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--atten-lim-db", "-3"])


@pytest.mark.parametrize("add", [add_serve_parser, add_stream_parser])
def test_live_commands_default_to_the_causal_model_on_the_auto_device(add):
    parser = argparse.ArgumentParser()
    add(parser.add_subparsers(dest="command"))
    name = "serve" if add is add_serve_parser else "stream"
    extra = [] if name == "serve" else ["--input", "a.wav", "--output", "b.wav"]
    args = parser.parse_args([name, *extra])
    assert args.model == STREAM_MODEL in bundled_models()
    assert args.device == "auto" and ServeSettings().device == "auto"
