"""One bad frame cannot poison a stream: refused before the state, answered with a JSON error.

A frame of 3e38, 1e20 or 32767.0 (f32 beyond full scale) used to set the running normalisation
peak of every later block: NaN, Inf or a wrong level for the rest of the stream.
"""

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff import DEFAULT_MODEL
from audiodiff.checkpoint import build_model, load_pretrained
from audiodiff.config import ModelConfig
from audiodiff.nets import PRESETS
from audiodiff.quickfit import tiny_storm_config
from audiodiff.serve import ServeSettings, background_server, create_app, stream_file
from audiodiff.streaming import RealtimeEnhancer

websockets = pytest.importorskip("websockets")  # in the [serve] and [test] extras
SPEECH = Path(__file__).parent / "data" / "pairs" / "noisy" / "p287_001.wav"
CHUNK, POISONED = 1024, 8  # the 9th binary message is the bad one
FRAMES = dict(block_frames=8, context_frames=4, lookahead_frames=2)


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    net = replace(PRESETS["ncsnpp_tiny"], nf=8, ch_mult=(1, 2), num_res_blocks=1)
    config = ModelConfig(
        kind="predictive",
        backbone=None,
        predictor=replace(net, in_channels=2, time_conditional=False),
    )
    return build_model(config).eval(), config


def speech(seconds: float = 2.0) -> np.ndarray:
    audio, rate = sf.read(str(SPEECH), dtype="float32")
    assert rate == 16000
    return audio[: int(seconds * rate)]


def level_db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-20)


@pytest.mark.parametrize("bad", [3e38, 1e20, 32767.0, 1.5, np.inf])
def test_realtime_enhancer_refuses_a_bad_chunk_and_its_state_is_untouched(micro, bad):
    model, config = micro
    signal = speech(1.0)
    a, b = signal[:4000], signal[4000:]
    rt, clean = (RealtimeEnhancer(model, config, mode="predictive", **FRAMES) for _ in range(2))
    out = [rt.push(a)]
    with pytest.raises(ValueError, match=r"finite|\[-1, 1\]"):
        rt.push(np.full(512, bad, np.float32))
    out += [rt.push(b), rt.flush()]
    expected = [clean.push(a), clean.push(b), clean.flush()]
    np.testing.assert_array_equal(np.concatenate(out), np.concatenate(expected))


async def stream(url: str, signal: np.ndarray):
    return await stream_file(url, signal, chunk=CHUNK, realtime=False, timeout=120)


@pytest.fixture(scope="module")
def bundled():
    """The bundled model's predictor: a real enhancer, so the output has a speech level."""
    return load_pretrained(DEFAULT_MODEL)


@pytest.mark.parametrize("bad", [3e38, 1e20, 32767.0])
def test_a_poisoned_frame_mid_stream_is_refused_and_the_stream_goes_on(bundled, bad):
    model, config = bundled
    signal = speech(2.0)
    span = slice(POISONED * CHUNK, (POISONED + 1) * CHUNK)
    poisoned, silenced = signal.copy(), signal.copy()
    poisoned[span.start + 100] = bad  # one sample beyond full scale in the 9th message
    silenced[span] = 0.0
    app = create_app(model, config, ServeSettings(mode="predictive", **FRAMES))
    with background_server(app) as url:
        ws = url.replace("http", "ws") + "/ws"
        out, _, final, errors = asyncio.run(stream(ws, poisoned))
        reference, _, _, reference_errors = asyncio.run(stream(ws, silenced))
    assert reference_errors == [] and len(errors) == 1 and "[-1, 1]" in errors[0]
    assert final["received_samples"] == len(signal) - CHUNK  # only that frame was dropped
    assert np.isfinite(out).all() and np.abs(out).max() <= 1.0
    before = span.start  # up to the bad frame the two streams are the same stream
    np.testing.assert_array_equal(out[:before], reference[:before])
    after, after_reference = out[before:], reference[before:]
    assert abs(level_db(after) - level_db(after_reference)) < 1.0
    assert level_db(after) > level_db(reference[:before]) - 20  # not silenced either


async def hello_list_then_a_good_stream(url: str) -> None:
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "hello", "format": ["f32"], "sample_rate": 16000}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert reply["type"] == "error" and "format must be one of" in reply["message"], reply
        await ws.send(json.dumps({"type": "hello", "format": "f32", "sample_rate": 16000}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "ready"
        await ws.send(np.full(256, 0.1, "<f4").tobytes())
        assert len(await asyncio.wait_for(ws.recv(), 30)) == 256 * 4  # still usable


def test_a_list_as_format_is_a_json_error_not_a_type_error():
    app = create_app(None, tiny_storm_config(), ServeSettings(mode="passthrough"))
    with background_server(app) as url:
        asyncio.run(hello_list_then_a_good_stream(url.replace("http", "ws") + "/ws"))


def test_stream_precision_bf16_runs_the_network_in_bf16_and_stays_close(micro):
    model, config = micro
    signal = speech(0.5)
    outs = {}
    for precision in ("fp32", "bf16"):
        rt = RealtimeEnhancer(model, config, mode="predictive", precision=precision, **FRAMES)
        outs[precision] = np.concatenate([rt.push(signal), rt.flush()])
    assert np.isfinite(outs["bf16"]).all() and not np.array_equal(outs["bf16"], outs["fp32"])
    error = level_db(outs["bf16"] - outs["fp32"]) - level_db(outs["fp32"])
    assert error < -20  # bf16 rounding: well below the signal
    with pytest.raises(ValueError, match="precision"):
        RealtimeEnhancer(model, config, mode="predictive", precision="fp8")
