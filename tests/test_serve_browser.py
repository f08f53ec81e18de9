"""The live page in headless Chromium: fake microphone (a real noisy file) -> server -> page.

Needs Debian's Chromium (``apt-get install -y chromium``) and the ``playwright`` Python package
(``pip install 'audiodiff[test]'``); Playwright only drives the system browser here, it never
downloads one. Missing either is a failure, not a skip: the CI installs both.
"""

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiodiff.audio import read_audio, resample
from audiodiff.checkpoint import build_model
from audiodiff.config import ModelConfig
from audiodiff.nets import PRESETS
from audiodiff.quickfit import tiny_storm_config
from audiodiff.serve import ServeSettings, background_server, create_app
from audiodiff.spec import SpecConfig
from audiodiff.streaming import RealtimeEnhancer

CHROMIUM = os.environ.get("AUDIODIFF_CHROMIUM", "/usr/bin/chromium")
NOISY = Path(__file__).parent / "data" / "pairs" / "noisy" / "p287_001.wav"


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def chromium_flags(fake_wav: Path) -> list[str]:
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_wav}",
        "--autoplay-policy=no-user-gesture-required",
    ]


def model_48k() -> ModelConfig:
    """An untrained micro causal predictor at 48 kHz (768 bins, 8 ms hops), as ncsnpp_48k's STFT."""
    spec = SpecConfig(sample_rate=48000, n_fft=1534, hop_length=384)
    net = replace(PRESETS["ncsnpp_causal"], nf=8, ch_mult=(1, 2), num_freqs=768)
    return ModelConfig(
        kind="predictive",
        backbone=None,
        predictor=replace(net, in_channels=2, time_conditional=False),
        spec=spec,
    )


SETUPS = {  # config, streaming frames, the latency in samples they give
    "16k-window": (tiny_storm_config, dict(block_frames=16, context_frames=8, lookahead_frames=2),
                   509 + (16 - 1 + 2) * 128),
    "48k-causal": (model_48k, dict(block_frames=4), 1533 + (4 - 1 + 1) * 384),
}  # fmt: skip


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_page_streams_the_microphone_and_plays_enhanced_audio(tmp_path, setup):
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install 'audiodiff[test]'")
    make_config, frames, latency = SETUPS[setup]
    noisy, rate = read_audio(NOISY)  # 1.96 s; Chromium loops the file
    fake = tmp_path / "noisy.wav"
    sf.write(fake, resample(noisy[0], rate, 48000), 48000, subtype="PCM_16")
    torch.manual_seed(0)
    config = make_config()
    model_rate = config.spec.sample_rate
    model = build_model(config).eval()
    offline = RealtimeEnhancer(model, config, mode="predictive", **frames)
    at_model_rate = resample(noisy[0], rate, model_rate)
    expected_rms = rms(np.concatenate([offline.push(at_model_rate), offline.flush()]))
    settings = ServeSettings(mode="predictive", model_name="tiny-test", **frames)
    app = create_app(model, config, settings)
    with background_server(app) as url, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM,
            headless=True,
            args=chromium_flags(fake),
        )
        try:
            page = context.new_page()
            page.goto(url)
            page.wait_for_function("() => window.audiodiffStats.info !== null", timeout=30_000)
            info = page.inner_text("#info")  # what will run, before Start
            page_axis = page.eval_on_selector_all("#yaxis span", "s => s.map(e => e.textContent)")
            page.click("#start")
            page.wait_for_function(
                f"() => window.audiodiffStats.receivedSamples >= {int(1.5 * model_rate)} "
                "|| window.audiodiffStats.errors.length > 0",
                timeout=90_000,
            )
            stats = page.evaluate("window.audiodiffStats")
            page.click("#toggle")  # before/after switch works while streaming
            assert page.inner_text("#toggle") == "Hearing: original"
            readout = page.inner_text("#readout")
            overload = '{"type": "error", "message": "server overloaded: 600 ms waiting; dropped"}'
            page.evaluate(f"window.audiodiffPage.onServerText({overload!r})")
            status = page.inner_text("#status"), page.get_attribute("#status", "class")
            page.screenshot(path=os.environ.get("AUDIODIFF_PAGE_SHOT", str(tmp_path / "page.png")))
        finally:
            context.close()
    assert stats["errors"] == []
    assert stats["ready"]["mode"] == "predictive" and stats["ready"]["sample_rate"] == model_rate
    assert stats["receivedSamples"] / model_rate >= 1.0  # >= 1 s of enhanced audio came back
    assert stats["receivedSamples"] <= stats["sentSamples"]  # one reply per message, same size
    # the fake microphone delivered the file through the worklet at the model's rate
    assert 0.7 < stats["sentRms"] / rms(noisy[0]) < 1.4, (stats["sentRms"], rms(noisy[0]))
    # not silent: the (untrained, quiet) model's level, as an offline run of it gives
    assert 0.3 < stats["rms"] / expected_rms < 3, (stats["rms"], expected_rms)
    assert "algorithmic" in readout and "RTF" in readout
    # latency in samples: the STFT's n_fft - 1, then block - 1 + look-ahead hops
    assert info.startswith("model tiny-test · mode predictive")
    assert f"{1000 * latency / model_rate:.1f} ms" in info and f"{model_rate // 1000} kHz" in info
    top = page_axis[0]  # the spectrogram's frequency axis goes up to the model's Nyquist rate
    assert top == f"{model_rate / 2000:g} kHz", page_axis
    assert status[0].startswith("OVERLOADED") and status[1] == "overloaded"  # a visible state
