"""Score model folders on a pool recipe's validation utterances (never on an evaluation set).

    python eval/pool_valid.py RECIPE.yaml --models DIR [DIR ...] [--modes predictive bridge@3] \
        [--pairs DIR] [KEY=VALUE ...]

The utterances are the recipe's ``train.num_eval_files`` whole-utterance mixtures of the clean and
noise files its ``data.valid`` holds out of training (the ones validation enhances), so a model
trained by that recipe has never seen them. Prints mean PESQ-WB, ESTOI and SI-SDR per model and
mode; ``MODE@N`` sets the reverse steps. The recipe's data folders may be overridden as in
``audiodiff train`` (``data.clean=DIR ...``), and so may its mixing (``data.mix.reverb_prob=0``).
``--pairs DIR`` adds the recorded pairs of ``DIR/{clean,noisy}`` (never an evaluation set): the
means are then printed for the mixtures, the pairs and both together.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from audiodiff.cli import describe_error
from audiodiff.data.datasets import PairedDataset
from audiodiff.data.pairs import find_pairs
from audiodiff.enhance import Enhancer
from audiodiff.metrics import compute_metrics
from audiodiff.training.data import build_data
from audiodiff.training.recipe import load_recipe

METRICS = ("pesq", "estoi", "si_sdr")


def parse_mode(spec: str) -> dict:
    """``MODE[:METHOD][@N][~T_EPS]`` -> sampler overrides, e.g. ``bridge:sb_sde@3~0.03``."""
    spec, _, t_eps = spec.partition("~")
    head, _, steps = spec.partition("@")
    mode, _, method = head.partition(":")
    out = {"mode": mode, **({"steps": int(steps)} if steps else {})}
    return {
        **out,
        **({"method": method} if method else {}),
        **({"t_eps": float(t_eps)} if t_eps else {}),
    }


def load_utterances(recipe_path: str, overrides: list[str], pairs: str | None):
    """(recipe, [(clean, noisy, index)], {part: slice of that list}) for the mixtures and pairs."""
    recipe = load_recipe(recipe_path, overrides)
    t, rate = recipe.train, recipe.model.spec.sample_rate
    data = build_data(recipe.data, recipe.model.spec, recipe.crop_samples, t.num_eval_files, t.seed)
    mixtures = data.eval_files or []
    files = [mixtures[i] for i in range(len(mixtures))]  # (clean, noisy, index)
    if not files and not pairs:
        raise ValueError(f"{recipe_path}: nothing to score: set train.num_eval_files or --pairs")
    parts = {"mixtures": slice(0, len(files))} if files else {}
    if pairs:
        folder = Path(pairs)
        found = find_pairs(folder.parent, folder.name)
        recorded = PairedDataset(found, None, train=False, sample_rate=rate)
        files += [(*recorded[i], 0) for i in range(len(recorded))]
        parts["pairs"] = slice(len(files) - len(recorded), None)
        if len(parts) == 2:
            parts["all"] = slice(None)
    return recipe, files, parts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE recipe overrides")
    parser.add_argument("--models", nargs="+", required=True, help="model folders or names")
    parser.add_argument("--modes", nargs="+", default=[None], help="MODE[:METHOD][@N][~T_EPS]")
    parser.add_argument("--pairs", help="a folder of recorded clean/ and noisy/ pairs to add")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        recipe, files, parts = load_utterances(args.recipe, args.overrides, args.pairs)
        enhancers = {model: Enhancer.from_pretrained(model, device="cpu") for model in args.models}
    except (OSError, ValueError) as err:  # missing folders, unreadable audio, bad recipes
        raise SystemExit(f"error: {describe_error(err)[0]}") from None
    t, rate = recipe.train, recipe.model.spec.sample_rate
    for model, enhancer in enhancers.items():
        for spec in args.modes:
            settings = parse_mode(spec) if spec else {}
            scores = []
            for clean, noisy, index in files:
                out = enhancer(noisy.numpy(), rate, seed=t.seed + int(index), **settings)
                scores.append(compute_metrics(clean.numpy(), np.asarray(out), rate))
            for part, rows in parts.items():
                means = {m: float(np.nanmean([s[m] for s in scores[rows]])) for m in METRICS}
                text = " ".join(f"{m} {v:.3f}" for m, v in means.items())
                count = len(scores[rows])
                print(f"{model} {spec or 'default'} {part} ({count} files): {text}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
