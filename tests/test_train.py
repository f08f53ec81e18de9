"""The training system: recipes, exact resume, DDP, export and validation metrics (tiny, CPU).

The micro recipe ``recipes/pool/tiny_test.yaml`` trains on a paired layout built here from the
committed test pairs; nothing under ../shared is needed.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pesq
import pytest
import torch
from pystoi import stoi

from audiodiff import DEFAULT_MODEL
from audiodiff.checkpoint import load_pretrained
from audiodiff.data import PairedDataset, find_pairs
from audiodiff.enhance import Enhancer
from audiodiff.metrics import compute_metrics, si_sdr
from audiodiff.nets import PRESETS
from audiodiff.quickfit import tiny_storm_config
from audiodiff.spec import Spectrogram
from audiodiff.train import build_training_model, main_export, make_loss, train
from audiodiff.training.data import StepBatchSampler
from audiodiff.training.module import ema_update
from audiodiff.training.recipe import RecipeError, apply_overrides, load_recipe, parse_recipe

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "recipes" / "pool" / "tiny_test.yaml"
PAIRS = REPO / "tests" / "data" / "pairs"
THREADS = os.environ.get("AUDIODIFF_TEST_THREADS", "2")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """base/{train,valid}/{clean,noisy} with the two committed pairs in both subsets."""
    root = tmp_path_factory.mktemp("pairs")
    for subset in ("train", "valid"):
        for kind in ("clean", "noisy"):
            shutil.copytree(PAIRS / kind, root / subset / kind)
    return root


def tiny(base: Path, output: Path, *overrides: str):
    return load_recipe(TINY, [f"data.base={base}", f"output={output}", *overrides])


@pytest.fixture(scope="module")
def run(base, tmp_path_factory) -> Path:
    """The tiny recipe as it is: 20 steps, one validation (1 file enhanced) at step 20."""
    return train(tiny(base, tmp_path_factory.mktemp("runs") / "tiny"))


def read_metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "logs" / "version_0" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def weights(checkpoint: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


# -- training ---------------------------------------------------------------------------------


def fixed_batch_loss(recipe, model) -> float:
    """Mean loss on the two centred validation crops over 4 fixed draws of (t, z)."""
    pairs = find_pairs(recipe.data.base, "valid")
    crops = PairedDataset(pairs, recipe.crop_samples, train=False)
    clean, noisy = (torch.stack(x) for x in zip(*(crops[i] for i in range(len(crops)))))
    spec = Spectrogram(recipe.model.spec)
    loss_fn = make_loss(recipe, spec)
    with torch.no_grad():
        losses = [
            loss_fn(model, spec.analyse(clean), spec.analyse(noisy), generator=g).mean()
            for g in (torch.Generator().manual_seed(s) for s in range(4))
        ]
    return float(torch.stack(losses).mean())


def test_tiny_recipe_trains_and_overfits(run, base):
    recipe = load_recipe(run / "recipe.yaml")
    assert recipe.train.max_steps == 20
    model = build_training_model(recipe)  # the same seeded initial weights
    before = fixed_batch_loss(recipe, model)
    model.load_state_dict(weights(run / "checkpoints" / "last.ckpt", "model."))
    after = fixed_batch_loss(recipe, model)
    assert after < 0.8 * before, (before, after)
    rows = read_metrics(run)
    assert [int(r["step"]) for r in rows if r["train_loss"]] == [4, 9, 14, 19]
    (valid,) = [r for r in rows if r["valid_loss"]]
    assert all(math.isfinite(float(valid[k])) for k in ("valid_loss", "pesq", "estoi", "si_sdr"))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["best-step=20.ckpt", "last.ckpt"]  # nothing half-written left behind
    assert (run / "model" / "model.safetensors").is_file()


def test_logged_validation_metrics_match_independent_scores(run, base):
    """pesq/estoi/si_sdr in the log = pesq.pesq / pystoi / si_sdr of the same enhancement."""
    recipe = load_recipe(run / "recipe.yaml")
    (logged,) = [r for r in read_metrics(run) if r["si_sdr"]]
    pair = find_pairs(base, "valid")[0]  # num_eval_files=1: the first file
    clean, noisy = PairedDataset([pair], None, train=False)[0]
    enhancer = Enhancer.from_pretrained(run / "model", device="cpu")  # EMA of best-step=20
    enhanced = enhancer(noisy.numpy(), 16000, seed=recipe.train.seed)  # file index 0
    clean = clean.numpy().astype(np.float64)
    enhanced = enhanced.astype(np.float64)
    expected = {
        "pesq": pesq.pesq(16000, clean, enhanced, "wb"),
        "estoi": stoi(clean, enhanced, 16000, extended=True),
        "si_sdr": si_sdr(clean, enhanced),
    }
    for name, value in expected.items():
        assert float(logged[name]) == pytest.approx(value, rel=1e-4, abs=1e-4), name


def test_the_validation_metric_helper_matches_the_libraries():
    """EnhancementModule scores with audiodiff.metrics.compute_metrics: check it directly too."""
    import soundfile as sf

    clean, rate = sf.read(PAIRS / "clean" / "p287_001.wav")
    noisy, _ = sf.read(PAIRS / "noisy" / "p287_001.wav")
    scores = compute_metrics(clean, noisy, rate)
    assert scores["pesq"] == pytest.approx(pesq.pesq(rate, clean, noisy, "wb"), abs=1e-6)
    assert scores["estoi"] == pytest.approx(stoi(clean, noisy, rate, extended=True), abs=1e-6)
    assert scores["si_sdr"] == pytest.approx(si_sdr(clean, noisy), abs=1e-9)
    assert scores["estoi"] != pytest.approx(stoi(clean, noisy, rate, extended=False), abs=1e-3)


class Crash(pl.Callback):
    """Simulates a killed run: fails right after optimiser step ``at``, before any save."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("simulated crash")


def test_resume_is_exact(base, tmp_path):
    """Stop at max_steps=2, resume, crash after step 4 (periodic save at 3), resume to 5: the
    weights and the EMA equal those of one uninterrupted 5-step run, bit for bit."""
    fast = ("train.val_every_n_steps=0", "train.checkpoint_every_n_steps=3")
    straight = train(tiny(base, tmp_path / "straight", "train.max_steps=5", *fast), export=False)
    broken, last = tmp_path / "broken", tmp_path / "broken" / "checkpoints" / "last.ckpt"
    train(tiny(base, broken, "train.max_steps=2", *fast), export=False)
    assert torch.load(last, weights_only=True)["global_step"] == 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        recipe = tiny(base, broken, "train.max_steps=5", *fast)
        train(recipe, resume=True, callbacks=[Crash(4)], export=False)
    assert torch.load(last, weights_only=True)["global_step"] == 3  # the periodic save survives
    train(tiny(base, broken, "train.max_steps=5", *fast), resume=True, export=False)
    reference = straight / "checkpoints" / "last.ckpt"
    for prefix in ("model.", "ema."):
        expected, got = weights(reference, prefix), weights(last, prefix)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(got[key], value), (prefix, key)
    # the EMA really is a separate average, not a copy of the weights
    model, ema = weights(reference, "model."), weights(reference, "ema.")
    assert not all(torch.equal(model[k], v) for k, v in ema.items())


class RecordLearningRate(pl.Callback):
    def __init__(self):
        self.rates = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rates.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_cosine_learning_rate_falls_from_lr_to_lr_final_and_resumes(base, tmp_path):
    """Steps 0-4 of a 5-step cosine schedule; a run killed after step 3 (saved at step 2) goes
    on from step 2 of the same schedule."""
    steps = 5
    overrides = ("train.lr=1e-3", "train.lr_final=1e-4", "train.checkpoint_every_n_steps=2")
    recipe = tiny(
        base, tmp_path / "cosine", f"train.max_steps={steps}", "train.val_every_n_steps=0",
        *overrides,
    )  # fmt: skip
    first, resumed = RecordLearningRate(), RecordLearningRate()
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(recipe, callbacks=[first, Crash(3)], export=False)
    train(recipe, resume=True, callbacks=[resumed], export=False)
    expected = [
        1e-4 + 0.5 * (1e-3 - 1e-4) * (1 + math.cos(math.pi * s / steps)) for s in range(steps)
    ]
    np.testing.assert_allclose(first.rates, expected[:3], rtol=1e-9)
    np.testing.assert_allclose(resumed.rates, expected[2:], rtol=1e-9)
    with pytest.raises(RecipeError, match="lr_final"):
        tiny(base, tmp_path / "bad", "train.lr=1e-4", "train.lr_final=1e-3")
    # stop_step ends a run early on the same schedule (a checkpoint chosen mid-run, reproduced)
    stopped = RecordLearningRate()
    early = tiny(
        base, tmp_path / "stopped", f"train.max_steps={steps}", "train.stop_step=3",
        "train.val_every_n_steps=0", *overrides,
    )  # fmt: skip
    train(early, callbacks=[stopped], export=False)
    np.testing.assert_allclose(stopped.rates, expected[:3], rtol=1e-9)
    with pytest.raises(RecipeError, match="stop_step"):
        tiny(base, tmp_path / "bad", "train.max_steps=5", "train.stop_step=6")


def test_fresh_run_refuses_an_existing_run_folder(run, base):
    with pytest.raises(ValueError, match="--resume"):
        train(tiny(base, run))
    with pytest.raises(FileNotFoundError):
        train(tiny(base, run.parent / "nothing-here"), resume=True)


DRIVER = """
import hashlib, sys
import torch
torch.set_num_threads(1)
import lightning.pytorch as pl
from audiodiff.train import train
from audiodiff.training.recipe import load_recipe

class Dump(pl.Callback):
    first = None
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if self.first is None:
            self.first = hashlib.sha1(batch[1].numpy().tobytes()).hexdigest()
    def on_train_end(self, trainer, module):
        state = {"model": module.model.state_dict(), "ema": module.ema.state_dict(),
                 "first": self.first, "world": trainer.world_size}
        torch.save(state, f"{sys.argv[1]}/rank{trainer.global_rank}.pt")

train(load_recipe(sys.argv[2], sys.argv[3:]), callbacks=[Dump()])
"""


def test_ddp_two_cpu_processes_stay_in_sync(base, tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(DRIVER))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(driver), str(tmp_path), str(TINY)]
    command += [f"data.base={base}", f"output={tmp_path / 'run'}", "train.max_steps=3"]
    command += ["train.val_every_n_steps=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["first"] != rank1["first"]  # each rank trained on its own shard
    for part in ("model", "ema"):
        for key, value in rank0[part].items():
            assert torch.equal(value, rank1[part][key]), (part, key)
    initial = build_training_model(tiny(base, tmp_path / "x")).state_dict()
    assert not all(torch.equal(initial[k], v) for k, v in rank0["model"].items())
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


# -- export -----------------------------------------------------------------------------------


def test_export_loads_enhances_and_fp16_halves(run, tmp_path):
    last = str(run / "checkpoints" / "last.ckpt")
    assert main_export([last, "-o", str(tmp_path / "fp32")]) == 0
    assert main_export([last, "-o", str(tmp_path / "fp16"), "--fp16"]) == 0
    assert main_export([last, "-o", str(tmp_path / "raw"), "--raw"]) == 0
    size32, size16 = ((tmp_path / d / "model.safetensors").stat().st_size for d in ("fp32", "fp16"))
    assert 0.45 < size16 / size32 < 0.55
    noisy = PairedDataset(find_pairs(PAIRS.parent, "pairs"), None, train=False)[0][1].numpy()
    ema = Enhancer.from_pretrained(tmp_path / "fp32", device="cpu")
    out = ema(noisy, 16000, seed=0)
    assert out.shape == noisy.shape and np.isfinite(out).all() and np.abs(out).max() > 0
    half = Enhancer.from_pretrained(tmp_path / "fp16", device="cpu")(noisy, 16000, seed=0)
    assert np.abs(half - out).max() < 0.05 * np.abs(out).max()
    raw = Enhancer.from_pretrained(tmp_path / "raw", device="cpu")(noisy, 16000, seed=0)
    assert not np.allclose(raw, out)  # --raw exports the raw weights, the default the EMA


def test_export_stores_sampler_defaults_and_rejects_unknown_ones(run, tmp_path):
    last = str(run / "checkpoints" / "last.ckpt")
    out = tmp_path / "predictive"
    assert main_export([last, "-o", str(out), "--sampler", "mode=predictive", "steps=3"]) == 0
    enhancer = Enhancer.from_pretrained(out, device="cpu")
    assert (enhancer.config.sampler.mode, enhancer.config.sampler.steps) == ("predictive", 3)
    with pytest.raises(ValueError, match="unknown sampler setting"):
        main_export([last, "-o", str(tmp_path / "bad"), "--sampler", "stepz=3"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main_export([last, "-o", str(tmp_path / "bad"), "--sampler", "steps"])
    assert not (tmp_path / "bad").exists()


def test_init_model_starts_from_a_model_folder_and_init_predictor_overrides_it(run, base, tmp_path):
    last = str(run / "checkpoints" / "last.ckpt")
    assert main_export([last, "-o", str(tmp_path / "raw"), "--raw"]) == 0
    ema, raw = (
        load_pretrained(folder)[0].state_dict() for folder in (run / "model", tmp_path / "raw")
    )
    inits = (f"train.init_model={run / 'model'}", f"train.init_predictor={tmp_path / 'raw'}")
    model = build_training_model(tiny(base, tmp_path / "next", *inits)).state_dict()
    for key, value in model.items():
        source = raw if key.startswith("predictor.") else ema
        assert torch.equal(value, source[key]), key
    assert not all(torch.equal(ema[k], raw[k]) for k in ema)  # the two sources differ
    wider = tiny(base, tmp_path / "wider", inits[0], "model.backbone.nf=16")
    with pytest.raises(ValueError, match=f"{run / 'model'}: its weights do not fit"):
        build_training_model(wider)


def test_export_rejects_a_foreign_checkpoint(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="not an audiodiff training checkpoint"):
        main_export([str(tmp_path / "foreign.ckpt"), "-o", str(tmp_path / "out")])


# -- units ------------------------------------------------------------------------------------


def test_step_batch_sampler_resumes_shards_and_covers_each_epoch():
    sampler = StepBatchSampler(num_items=10, batch_size=3, seed=1)
    stream = [sampler.batch(b) for b in range(10)]  # 30 positions = 3 epochs
    for epoch in range(3):
        keys = [k for batch in stream for k in batch][10 * epoch : 10 * (epoch + 1)]
        assert sorted(i for e, i in keys) == list(range(10)) and {e for e, _ in keys} == {epoch}
    sampler.start_batch = 4
    resumed = iter(sampler)
    assert [next(resumed) for _ in range(3)] == stream[4:7]
    shards = [sampler.batch(0, rank, 2) for rank in (0, 1)]
    assert shards[0] + shards[1] == stream[0] + stream[1]  # ranks split the same stream


def test_ema_update_is_an_exponential_average():
    torch.manual_seed(0)
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in ema.parameters()]
    ema_update(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)


# -- recipes ----------------------------------------------------------------------------------


def test_unknown_keys_raise_naming_them(tmp_path):
    doc = {"model": {"kind": "score"}, "data": {"base": "x"}, "output": "runs/x"}
    parse_recipe(doc)
    for bad, name in (
        ({**doc, "train": {"max_step": 3}}, "train.max_step"),
        ({**doc, "data": {"base": "x", "valid": {"bse": "y"}}}, "data.valid.bse"),
        ({**doc, "extra": 1}, "extra"),
        ({**doc, "model": {"kind": "score", "backbon": "ncsnpp"}}, "backbon"),
        ({**doc, "model": {"backbone": {"preset": "ncsnpp_s", "nff": 3}}}, "nff"),
    ):
        with pytest.raises(RecipeError, match=name):
            parse_recipe(bad)
    with pytest.raises(RecipeError, match="train.batch_size"):
        parse_recipe({**doc, "train": {"batch_size": "eight"}})
    with pytest.raises(RecipeError, match="unknown network preset"):
        parse_recipe({**doc, "model": {"backbone": "ncsnpp_xxl"}})
    with pytest.raises(RecipeError, match="applies to storm"):
        parse_recipe({**doc, "train": {"alpha": 0.3}})


def test_overrides_set_dotted_keys_as_yaml_scalars():
    original = {"model": {"kind": "score", "backbone": "ncsnpp_tiny"}, "train": {}}
    overrides = ["train.max_steps=20", "train.lr=3e-4", "model.backbone.nf=16"]
    doc = apply_overrides(original, [*overrides, "model.backbone.ch_mult=[1,2]"])
    assert doc["train"] == {"max_steps": 20, "lr": "3e-4"}
    assert doc["model"]["backbone"] == {"preset": "ncsnpp_tiny", "nf": 16, "ch_mult": [1, 2]}
    assert original["model"]["backbone"] == "ncsnpp_tiny"  # the input is not modified
    recipe = parse_recipe({**doc, "data": {"base": "x"}, "output": "o"})
    assert recipe.train.lr == 3e-4 and recipe.model.backbone.nf == 16
    assert recipe.model.backbone.num_res_blocks == PRESETS["ncsnpp_tiny"].num_res_blocks
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        apply_overrides(doc, ["train.max_steps"])
    with pytest.raises(RecipeError, match="train.max_steps is not a mapping"):
        apply_overrides(doc, ["train.max_steps.x=1"])


def test_recipe_round_trips_through_its_dict(tmp_path):
    recipe = load_recipe(REPO / "recipes" / "pool" / "storm_tiny.yaml")
    assert parse_recipe(recipe.to_dict()) == recipe


RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))


def test_recipes_are_indexed_and_documented():
    names = {p.relative_to(REPO / "recipes").as_posix() for p in RECIPES}
    assert {"vbdmd/sgmse.yaml", "vbdmd/storm.yaml", "pool/storm_tiny.yaml"} <= names
    assert {"pool/storm_small.yaml", "pool/tiny_test.yaml", "ears48k/sgmse.yaml"} <= names
    index = (REPO / "recipes" / "README.md").read_text()
    for folder in {p.parent for p in RECIPES}:
        assert (folder / "README.md").is_file(), folder
        assert f"{folder.name}/" in index, folder.name
    assert "torchrun" in index


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_recipe_validates(path):
    recipe = load_recipe(path)  # strict parse, ModelConfig, presets, crop vs network depth
    for name in ("backbone", "predictor"):
        net = getattr(recipe.model, name)
        if net is not None:
            assert net.num_freqs == recipe.model.spec.num_freqs
    assert not Path(recipe.output).is_absolute()
    for value in (recipe.data.base, recipe.data.clean, recipe.data.noise, recipe.data.rir):
        assert value is None or not Path(value).is_absolute(), value


def test_pool_tiny_recipe_is_the_bundled_architecture():
    recipe = load_recipe(REPO / "recipes" / "pool" / "storm_tiny.yaml")
    assert recipe.model == tiny_storm_config()
    stage1 = load_recipe(REPO / "recipes" / "pool" / "predictive_tiny.yaml")
    assert stage1.model.predictor == recipe.model.predictor  # stage 2 loads stage 1's predictor
    assert recipe.train.init_predictor == f"{stage1.output}/model" and recipe.train.freeze_predictor
    assert stage1.data == recipe.data
    mix = recipe.data.mix
    assert (mix.snr_db, mix.gain_db, mix.reverb_prob, mix.max_rt60_s) == (
        (-5.0, 20.0),
        (-6.0, 6.0),
        0.3,
        1.0,
    )


def script_commands(path: Path) -> list[list[str]]:
    """The ``audiodiff ...`` commands of a shell script, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    lines = (line.strip() for line in text.splitlines())
    return [shlex.split(line)[1:] for line in lines if line.startswith("audiodiff ")]


def test_the_bundled_training_script_is_consistent_and_made_the_bundled_model():
    """Each stage loads only what an earlier stage wrote, every recipe with its overrides
    validates, and the last training command's recipe and step count are the bundled model's."""
    written, trains = set(), []
    for command in script_commands(REPO / "recipes" / "pool" / "train_bundled.sh"):
        if command[0] == "train":
            recipe = load_recipe(REPO / command[1], command[2:])
            for source in (recipe.train.init_model, recipe.train.init_predictor):
                assert source is None or source in written, source
            written.add(f"{recipe.output}/model")  # a finished run exports its best checkpoint
            trains.append(recipe)
        else:
            assert command[0] == "export"
            assert Path(command[1]).parent.parent.as_posix() in {r.output for r in trains}
            written.add(command[command.index("-o") + 1])
    training = json.loads(
        (REPO / "audiodiff" / "assets" / "models" / DEFAULT_MODEL / "config.json").read_text()
    )["training"]

    def without_folders(recipe):  # the pool folders are the user's to choose
        return replace(recipe, data=replace(recipe.data, clean="POOL", noise="POOL", rir="POOL"))

    # compared as recipes: a field added since (at its default) is absent from the stored dict
    assert without_folders(parse_recipe(training["recipe"])) == without_folders(trains[-1])
    assert training["global_step"] == trains[-1].train.max_steps


def test_ears48k_recipe_uses_the_48k_settings():
    model = load_recipe(REPO / "recipes" / "ears48k" / "sgmse.yaml").model
    spec, sde = model.spec, model.sde
    assert (spec.sample_rate, spec.n_fft, spec.hop_length, spec.beta) == (48000, 1534, 384, 0.065)
    assert spec.alpha == pytest.approx(0.667)
    assert (sde["sigma_min"], sde["sigma_max"], sde["theta"]) == (0.1, 1.0, 2.0)
    assert model.backbone.num_freqs == 768


BRIDGE_OVERRIDES = (
    "model.kind=bridge",
    "model.predictor=null",
    "model.backbone.in_channels=4",
    "model.backbone.out_scale_at=output",
    "model.sde={name: sbve, k: 2.6, c: 0.4}",
    "model.loss_type=data_prediction",
    "model.network_scaling=null",
    "model.c_out='1'",
    "model.sampler={method: sb_ode, steps: 2, t_eps: 1.0e-4}",
    "train.t_eps=0.03",
)


def test_bridge_recipe_trains_through_the_one_entry_point(base, tmp_path):
    from audiodiff.losses import DataPredictionLoss

    recipe = tiny(base, tmp_path / "bridge", *BRIDGE_OVERRIDES, "train.max_steps=4",
                  "train.val_every_n_steps=4", "train.log_every_n_steps=1")  # fmt: skip
    model = build_training_model(recipe)
    spec = Spectrogram(recipe.model.spec)
    clean, noisy = (torch.stack(x) for x in zip(*PairedDataset(find_pairs(base, "valid"),
                                                                recipe.crop_samples)))  # fmt: skip
    x0, y = spec.analyse(clean), spec.analyse(noisy)
    with torch.no_grad():
        ours = make_loss(recipe, spec)(model, x0, y, generator=torch.Generator().manual_seed(1))
        direct = DataPredictionLoss(spec, recipe.model.l1_weight)(
            model, x0, y, y, t_eps=0.03, generator=torch.Generator().manual_seed(1)
        )
    assert torch.equal(ours, direct)
    run_dir = train(recipe)
    losses = [float(r["train_loss"]) for r in read_metrics(run_dir) if r["train_loss"]]
    assert len(losses) == 4 and all(math.isfinite(v) for v in losses)
    enhancer = Enhancer.from_pretrained(run_dir / "model", device="cpu")
    assert enhancer.config.kind == "bridge" and enhancer.config.default_mode == "bridge"
    out = enhancer(noisy[0].numpy(), 16000, seed=0)
    assert np.isfinite(out).all()
