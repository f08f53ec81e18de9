"""The streaming default that ships in the package: format, size, causality and latency."""

import json

from safetensors import safe_open

from audiodiff import STREAM_MODEL
from audiodiff.checkpoint import BUNDLED_DIR, bundled_models, load_pretrained
from audiodiff.streaming import RealtimeEnhancer, causal_predictor

MODEL_DIR = BUNDLED_DIR / STREAM_MODEL


def test_streaming_default_is_a_small_causal_predictor():
    assert STREAM_MODEL in bundled_models()
    assert sum(p.stat().st_size for p in MODEL_DIR.iterdir()) <= 3e6
    with safe_open(MODEL_DIR / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # full precision
    document = json.loads((MODEL_DIR / "config.json").read_text())
    assert document["training"]["global_step"] > 0
    assert "/tmp" not in json.dumps(document) and "/work" not in json.dumps(document)
    model, config = load_pretrained(STREAM_MODEL)
    net = causal_predictor(model)
    assert config.kind == "predictive" and net is not None and net.backbone.config.lookahead <= 2
    rt = RealtimeEnhancer(model, config, device="cpu")  # the defaults stream and serve use
    assert rt.latency_ms <= 64.0 and rt.window_frames == rt.block_frames  # the cached path


def test_streaming_default_enhances_the_bundled_examples():
    """Streamed live (running peak, default hop), the examples gain on every metric on average."""
    import numpy as np

    from audiodiff.audio import read_audio
    from audiodiff.demo import EXAMPLE_NAMES, EXAMPLES
    from audiodiff.metrics import compute_metrics

    model, config = load_pretrained(STREAM_MODEL)
    rt = RealtimeEnhancer(model, config, device="cpu")
    gains = {"pesq": [], "estoi": [], "si_sdr": []}
    for name in EXAMPLE_NAMES:
        noisy, rate = read_audio(EXAMPLES / "noisy" / name)
        clean, _ = read_audio(EXAMPLES / "clean" / name)
        assert rate == rt.sample_rate
        hop = rt.block_samples
        pieces = [rt.push(noisy[0, i : i + hop]) for i in range(0, noisy.shape[1], hop)]
        streamed = np.concatenate([*pieces, rt.flush()])[rt.latency_samples :]
        before = compute_metrics(clean[0], noisy[0], rate)
        after = compute_metrics(clean[0], streamed, rate)
        for metric, values in gains.items():
            values.append(after[metric] - before[metric])
    # measured: MEASURED
    for metric, floor in (("pesq", 0.05), ("estoi", 0.0), ("si_sdr", 0.5)):
        assert np.mean(gains[metric]) > floor, (metric, gains[metric])
