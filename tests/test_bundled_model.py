"""The model that ships in the package: format, size, and that it really enhances speech."""

import json

import numpy as np
import pytest
from safetensors import safe_open

from audiodiff import DEFAULT_MODEL
from audiodiff.checkpoint import BUNDLED_DIR, bundled_models, load_pretrained
from audiodiff.demo import EXAMPLE_NAMES, run_demo

MODEL_DIR = BUNDLED_DIR / DEFAULT_MODEL


def test_default_model_ships_as_fp16_safetensors_under_60_mb():
    assert DEFAULT_MODEL in bundled_models()
    size = sum(p.stat().st_size for p in MODEL_DIR.iterdir())
    assert size <= 60e6
    with safe_open(MODEL_DIR / "model.safetensors", framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}
    assert "F16" in dtypes and "F32" not in dtypes
    document = json.loads((MODEL_DIR / "config.json").read_text())
    assert document["config"]["kind"] == "storm"
    assert document["training"]["global_step"] > 0
    assert "/tmp" not in json.dumps(document) and "/work" not in json.dumps(document)
    model, config = load_pretrained()  # the default is the bundled model
    assert config.kind == "storm" and not model.training


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, run_demo(out)


def test_demo_writes_every_example_and_mode(demo):
    out, results = demo
    assert list(results) == list(EXAMPLE_NAMES)
    for name, scores in results.items():
        modes = [m for m in scores if m != "noisy"]
        assert "predictive" in modes
        for mode in modes:
            assert (out / mode / name).is_file()


def test_bundled_model_improves_every_metric_of_the_examples(demo):
    # measured: mean PESQ 1.40 -> 1.47, ESTOI 0.619 -> 0.641, SI-SDR 7.75 -> 9.09 dB
    _, results = demo
    for metric, gain in (("pesq", 0.05), ("estoi", 0.005), ("si_sdr", 0.5)):
        noisy = np.mean([r["noisy"][metric] for r in results.values()])
        enhanced = np.mean([r["predictive"][metric] for r in results.values()])
        assert enhanced > noisy + gain, metric
