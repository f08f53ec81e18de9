"""The second bundled model, bridge-tiny-pool: format, how it was trained, and what it does."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from audiodiff.checkpoint import BUNDLED_DIR, bundled_models, load_pretrained
from audiodiff.demo import EXAMPLE_NAMES, run_demo
from audiodiff.training.recipe import load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]
NAME = "bridge-tiny-pool"
MODEL_DIR = BUNDLED_DIR / NAME


def test_ships_full_precision_and_all_bundled_models_fit_in_60_mb():
    assert NAME in bundled_models()
    size = sum(p.stat().st_size for d in BUNDLED_DIR.iterdir() for p in d.iterdir())
    assert size <= 60e6
    with safe_open(MODEL_DIR / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}  # a run continues
    document = json.loads((MODEL_DIR / "config.json").read_text())
    assert "/tmp" not in json.dumps(document) and "/work" not in json.dumps(document)
    _, config = load_pretrained(NAME)
    assert config.kind == "bridge" and config.predictor is not None
    assert config.modes == ("bridge", "predictive") and config.default_mode == "bridge"
    assert 1 + config.sampler.steps <= 8  # network passes per file of the default mode


def script_commands(path: Path) -> list[list[str]]:
    """The ``audiodiff ...`` commands of a shell script, continuation lines joined, options
    (``--threads 1``) left out."""
    text = path.read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("audiodiff ")]
    return [[w for w in c if not w.startswith("--") and not w.isdigit()] for c in commands]


def test_the_training_script_made_the_shipped_weights():
    """Each stage loads only what an earlier stage wrote (or a bundled model), every recipe
    validates, and the shipped folder is the last stage's export, at its last step."""
    written, trains = set(bundled_models()), []
    for command in script_commands(REPO / "recipes" / "pool" / "train_bridge.sh"):
        if command[0] == "train":
            recipe = load_recipe(REPO / command[1], command[2:])
            for source in (recipe.train.init_model, recipe.train.init_predictor,
                           recipe.train.warm_start):  # fmt: skip
                assert source is None or source in written, source
            written.add(f"{recipe.output}/model")
            trains.append(recipe)
        else:
            assert command[0] == "export"
            assert Path(command[1]).parent.parent.as_posix() in {r.output for r in trains}
            written.add(command[command.index("-o") + 1])
    assert f"audiodiff/assets/models/{NAME}" in written
    training = json.loads((MODEL_DIR / "config.json").read_text())["training"]

    def without_folders(recipe):  # the pool folders are the user's to choose
        doc = recipe.to_dict()
        doc["data"].update(clean=None, noise=None, rir=None)
        return doc

    assert without_folders(parse_recipe(training["recipe"])) == without_folders(trains[-1])
    last = trains[-1].train
    assert training["global_step"] == (last.stop_step or last.max_steps)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return run_demo(out, NAME, ("bridge", "predictive"))


def test_its_predictive_mode_is_the_default_models_predictor(demo, tmp_path):
    default = run_demo(tmp_path, modes=("predictive",))  # storm-tiny-pool, float16 weights
    for name in EXAMPLE_NAMES:
        for metric in ("pesq", "estoi", "si_sdr"):
            ours, theirs = demo[name]["predictive"][metric], default[name]["predictive"][metric]
            assert ours == pytest.approx(theirs, abs=1e-3), (name, metric)


def test_bridge_mode_improves_every_metric_of_the_examples_and_beats_predictive(demo):
    # measured (means of the 3): noisy PESQ 1.40, ESTOI 0.619, SI-SDR 7.75 dB; bridge (N = 1)
    # 1.65, 0.652, 9.94 dB; predictive 1.47, 0.641, 9.09 dB
    def mean(mode, metric):
        return np.mean([r[mode][metric] for r in demo.values()])

    for metric, gain in (("pesq", 0.05), ("estoi", 0.005), ("si_sdr", 0.5)):
        assert mean("bridge", metric) > mean("noisy", metric) + gain, metric
    for metric, gain in (("pesq", 0.1), ("estoi", 0.0), ("si_sdr", 0.0)):
        assert mean("bridge", metric) > mean("predictive", metric) + gain, metric
