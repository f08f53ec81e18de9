"""Where in time a bridge-from-Ŷ model improves on its predictor: mean |x̂0 − x|² per bin by t.

    python eval/bridge_t_profile.py RECIPE.yaml [KEY=VALUE ...] --model DIR_OR_NAME [--t 1 0.5 0.03]

On the recipe's fixed validation crops (the clean and noise files its ``data.valid`` holds out
of training), prints the distance to the clean spectrogram of the noisy y, of Ŷ, and, for each t,
of the bridge network's x̂0 from x_t drawn from the bridge marginal around (x, Ŷ), and of x_t.
Sampling starts at t = 1, where x_t = Ŷ.
"""

from __future__ import annotations

import argparse
import sys

import torch

from audiodiff.checkpoint import load_pretrained
from audiodiff.losses import perturb
from audiodiff.models import StoRM
from audiodiff.spec import Spectrogram
from audiodiff.training.data import build_data
from audiodiff.training.recipe import load_recipe


def mean_square(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().square().mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE recipe overrides")
    parser.add_argument("--model", required=True, help="a bridge model with a predictor")
    parser.add_argument("--t", type=float, nargs="+", default=[1.0, 0.9, 0.7, 0.5, 0.3, 0.1, 0.03])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, config = load_pretrained(args.model)
    if config.kind != "bridge" or config.predictor is None:
        parser.error(f"--model {args.model}: not a bridge with a predictor")
    recipe = load_recipe(args.recipe, args.overrides)
    data = build_data(recipe.data, recipe.model.spec, recipe.crop_samples, 0, recipe.train.seed)
    spec = Spectrogram(config.spec)
    crops = [data.valid[i] for i in range(len(data.valid))]
    x0 = spec.analyse(torch.stack([torch.as_tensor(clean) for clean, _ in crops]))
    y = spec.analyse(torch.stack([torch.as_tensor(noisy) for _, noisy in crops]))
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        y_hat = model.predictor(y)
        cond = StoRM.condition(y, y_hat)
        print(f"{len(crops)} crops: y {mean_square(y, x0):.5f}  Ŷ {mean_square(y_hat, x0):.5f}")
        for t in args.t:
            times = torch.full((x0.shape[0],), t)
            x_t, *_ = perturb(model.score, x0, y_hat, t=times, generator=generator)
            x_hat = model.score(x_t, cond, times)
            print(f"t {t:.2f}: x̂0 {mean_square(x_hat, x0):.5f}  x_t {mean_square(x_t, x0):.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
