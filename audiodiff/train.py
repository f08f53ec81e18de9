"""``audiodiff train`` and ``audiodiff export``: the one training entry point of every recipe.

    audiodiff train RECIPE.yaml [key=value ...] [--resume | --resume-from CKPT]
    torchrun --nproc_per_node=N -m audiodiff.train RECIPE.yaml [key=value ...]    # DDP
    audiodiff export RUN/checkpoints/last.ckpt -o MODEL_DIR [--fp16] [--raw]

A run folder (the recipe's ``output``) holds ``recipe.yaml`` (the resolved recipe),
``checkpoints/last.ckpt`` (every ``checkpoint_every_n_steps`` and at the end) and
``checkpoints/best-step=N.ckpt`` (best by validation metric), ``logs/`` (CSV or TensorBoard) and
``model/``: the inference folder (EMA weights of the best checkpoint, else of the last).

Heavy imports (torch, Lightning) happen inside the functions, so building the CLI parser is cheap.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from .cli_options import add_threads_option, apply_threads

if TYPE_CHECKING:  # imported lazily: the CLI builds its parser without torch
    from .training.recipe import Recipe

__all__ = [
    "add_export_parser",
    "add_train_parser",
    "export_checkpoint",
    "main_export",
    "main_train",
    "make_loss",
    "train",
]
LAST = "last.ckpt"


# -- building blocks (the edge: everything is constructed here and passed in) ----------------


def _diffusion_loss(model, x0, y, *, generator=None, loss, **settings):
    """A diffusion objective with mean target and conditioning y (SGMSE+, bridge)."""
    return loss(model, x0, y, y, generator=generator, **settings)


def _bridge_from_prediction_loss(model, x0, y, *, generator=None, loss, **settings):
    """The bridge from Ŷ = predictor(y): mean target Ŷ, conditioning [y, Ŷ] (``model``: StoRM)."""
    from .models import StoRM

    y_hat = model.predictor(y)
    cond = StoRM.condition(y, y_hat)
    return loss(model.score, x0, y_hat, cond, generator=generator, **settings)


def _predictive_loss(model, x0, y, *, generator=None, loss):
    return loss(model(y), x0)


def make_loss(recipe: Recipe, spectrogram):
    """The recipe's loss as ``loss_fn(model, x0, y, generator=g) -> (B,)``.

    score: the model's ``loss_type`` (score matching, or the denoiser loss with its
    ``loss_weighting``); bridge: the data-prediction loss (+ ``l1_weight`` time-domain L1,
    + ``spectral_weight`` · multi-scale spectral loss, + ``loudness_weight`` · the PESQ-shaped
    loudness-disturbance loss);
    storm: α·L_pred + (1 − α)·DSM; predictive: L_pred; a bridge with a predictor: the
    data-prediction loss of the bridge from Ŷ. L_pred = ½‖Ŷ − x‖²
    (+ ``spectral_weight`` · multi-scale spectral loss). t ~ U[train.t_eps, T]; a bridge puts
    the share ``t_end_prob`` of its examples at t = T.
    """
    from .ddsp import multiscale_spectral_loss
    from .losses import DataPredictionLoss, WaveformTerm, denoiser_loss, score_matching_loss
    from .models import PredictiveLoss, predictive_mse_loss, storm_loss
    from .perceptual_loss import LoudnessDisturbanceLoss

    train, model = recipe.train, recipe.model
    t_eps = train.t_eps if train.t_eps is not None else model.sampler.t_eps
    predictive = predictive_mse_loss
    if train.spectral_weight:
        predictive = PredictiveLoss(spectrogram, 1.0, train.spectral_weight)
    if model.kind == "predictive":
        return partial(_predictive_loss, loss=predictive)
    if model.kind == "bridge":
        extra = [(train.spectral_weight, WaveformTerm(spectrogram, multiscale_spectral_loss))]
        if train.loudness_weight:  # its band tables are built only when it is used
            loudness = LoudnessDisturbanceLoss(model.spec.sample_rate)
            extra.append((train.loudness_weight, WaveformTerm(spectrogram, loudness)))
        # a zero weight leaves the term out (DataPredictionLoss skips it)
        loss = DataPredictionLoss(spectrogram, model.l1_weight, extra)
        bridge = _diffusion_loss if model.predictor is None else _bridge_from_prediction_loss
        return partial(bridge, loss=loss, t_eps=t_eps, t_end_prob=train.t_end_prob)
    if model.kind == "score" and model.loss_type == "denoiser":
        weighting = {"weighting": model.loss_weighting, "sigma_data": model.sigma_data}
        return partial(_diffusion_loss, loss=denoiser_loss, t_eps=t_eps, **weighting)
    if model.kind == "score":
        return partial(_diffusion_loss, loss=score_matching_loss, t_eps=t_eps)
    return partial(
        storm_loss,
        alpha=train.alpha,
        predictive_loss=predictive,
        score_task_prob=train.score_task_prob,
        t_eps=t_eps,
    )


def _copy_weights(path: str, target, *, predictor: bool) -> None:
    """Copy the weights of the model folder ``path`` into ``target``: all of them, or with
    ``predictor`` only its predictive stage (the whole model if it is a predictive one)."""
    from .checkpoint import load_pretrained

    source, config = load_pretrained(path)
    if predictor and config.kind != "predictive":
        source = getattr(source, "predictor", None)
        if source is None:
            raise ValueError(f"{path}: a {config.kind!r} model has no predictive stage")
    try:
        target.load_state_dict(source.state_dict())
    except RuntimeError as err:
        what = (
            "its predictor does not fit model.predictor"
            if predictor
            else "its weights do not fit model"
        )
        raise ValueError(f"{path}: {what} ({err})") from None


def _warm_start(path: str, target) -> None:
    """The time-conditional network of ``target`` from the predictor of the model folder ``path``
    (see :mod:`audiodiff.training.warm_start`)."""
    from .checkpoint import load_pretrained
    from .models import StoRM
    from .training.warm_start import warm_start_from_predictor

    source, config = load_pretrained(path)
    source = source if config.kind == "predictive" else getattr(source, "predictor", None)
    if source is None:
        raise ValueError(f"{path}: a {config.kind!r} model has no predictive stage to start from")
    score = target.score if isinstance(target, StoRM) else target
    try:
        warm_start_from_predictor(score.backbone, source.backbone)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def build_training_model(recipe: Recipe):
    """Freshly initialised model (seeded), or one started from ``train.init_model`` or warm-started
    from a predictor (``train.warm_start``); then optionally a loaded (and frozen) predictor."""
    import torch

    from .checkpoint import build_model

    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe.model)
    if recipe.train.init_model:
        _copy_weights(recipe.train.init_model, model, predictor=False)
    if recipe.train.warm_start:
        _warm_start(recipe.train.warm_start, model)
    if recipe.train.init_predictor:
        target = model if recipe.model.kind == "predictive" else model.predictor
        _copy_weights(recipe.train.init_predictor, target, predictor=True)
    if recipe.train.freeze_predictor:
        model.predictor.requires_grad_(False)
    return model


def _hardware(recipe: Recipe) -> dict:
    """accelerator/devices/num_nodes/strategy/precision; under torchrun, its process layout."""
    import torch

    t = recipe.train
    devices, num_nodes = t.devices, t.num_nodes
    torchrun = "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_WORLD_SIZE" in os.environ
    if torchrun and devices == "auto":
        devices = int(os.environ["LOCAL_WORLD_SIZE"])
        num_nodes = int(os.environ["WORLD_SIZE"]) // devices
    many = (isinstance(devices, int) and devices > 1) or num_nodes > 1
    cuda = torch.cuda.is_available() and t.accelerator in ("auto", "gpu", "cuda")
    precision = t.precision if t.precision != "auto" else ("bf16-mixed" if cuda else "32-true")
    return {
        "accelerator": t.accelerator,
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": "ddp" if many else "auto",
        "precision": precision,
    }


def _logger(recipe: Recipe):
    from lightning.pytorch import loggers

    save_dir = str(recipe.output)
    if recipe.train.log == "csv":
        return loggers.CSVLogger(save_dir, name="logs")
    if not (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")):
        raise ValueError(
            "train.log=tensorboard needs the tensorboard package: pip install tensorboard"
        )
    return loggers.TensorBoardLogger(save_dir, name="logs")


def _monitor(recipe: Recipe) -> tuple[str | None, str]:
    t = recipe.train
    if not t.val_every_n_steps:
        return None, "min"
    monitor = t.monitor
    if monitor == "auto":
        monitor = "si_sdr" if t.num_eval_files else "valid_loss"
    return monitor, "min" if monitor == "valid_loss" else "max"


def build_trainer(recipe: Recipe, callbacks: list, checkpoint_dir: Path):
    """The Lightning Trainer of a recipe: step-based, best + last checkpoints, atomic writes."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from .training.callbacks import AtomicCheckpointIO

    t = recipe.train
    monitor, mode = _monitor(recipe)
    every = {"dirpath": checkpoint_dir, "enable_version_counter": False}
    last = ModelCheckpoint(
        save_top_k=0, save_last=True, every_n_train_steps=t.last_every_n_steps, **every
    )
    checkpoints = [last]
    if monitor is not None:
        best = ModelCheckpoint(filename="best-{step}", monitor=monitor, mode=mode, **every)
        checkpoints.insert(0, best)
    return pl.Trainer(
        **_hardware(recipe),
        max_steps=t.stop_step or t.max_steps,
        val_check_interval=t.val_every_n_steps or None,
        check_val_every_n_epoch=None if t.val_every_n_steps else 1,
        limit_val_batches=1.0 if t.val_every_n_steps else 0,
        num_sanity_val_steps=0,
        gradient_clip_val=t.grad_clip,
        logger=_logger(recipe),
        callbacks=[*callbacks, *checkpoints],
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # the samplers shard by rank themselves
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar and sys.stderr.isatty(),  # no bar in logs and pipes
        default_root_dir=recipe.output,
    )


def _resume_path(checkpoint_dir: Path, resume: bool, resume_from: str | None) -> Path | None:
    if resume_from is not None:
        return Path(resume_from)
    last = checkpoint_dir / LAST
    if resume and not last.is_file():
        raise FileNotFoundError(f"{last}: no checkpoint to resume from")
    if not resume and last.exists():
        raise ValueError(
            f"{checkpoint_dir} already holds a run: pass --resume to continue it, "
            f"or set another output (output=runs/NEW)"
        )
    return last if resume else None


def train(
    recipe: Recipe,
    *,
    resume: bool = False,
    resume_from: str | None = None,
    callbacks: list | tuple = (),
    export: bool = True,
) -> Path:
    """Train a recipe (or continue its run exactly); returns the run folder.

    ``callbacks``: extra Lightning callbacks (e.g. for tests or custom logging). ``export``:
    write ``output/model`` at the end.
    """
    import yaml

    from .spec import Spectrogram
    from .training.callbacks import DataOrder
    from .training.data import build_data, make_loaders
    from .training.module import EnhancementModule

    output, t = Path(recipe.output), recipe.train
    checkpoint_dir = output / "checkpoints"
    ckpt = _resume_path(checkpoint_dir, resume, resume_from)
    model = build_training_model(recipe)
    loss_fn = make_loss(recipe, Spectrogram(recipe.model.spec))
    module = EnhancementModule(
        model, recipe.model, loss_fn, lr=t.lr, lr_final=t.lr_final, ema_decay=t.ema_decay,
        seed=t.seed, schedule_steps=t.max_steps,
        metadata={"recipe": recipe.to_dict()},
    )  # fmt: skip
    data = build_data(recipe.data, recipe.model.spec, recipe.crop_samples, t.num_eval_files, t.seed)
    pin = t.accelerator != "cpu" and _cuda_available()
    train_loader, sampler, valid_loaders = make_loaders(
        data, t.batch_size, t.seed, t.num_workers, pin_memory=pin
    )
    trainer = build_trainer(recipe, [DataOrder(sampler), *callbacks], checkpoint_dir)
    if trainer.is_global_zero:
        output.mkdir(parents=True, exist_ok=True)
        (output / "recipe.yaml").write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        trainer.logger.log_hyperparams(recipe.to_dict())
    trainer.fit(
        module,
        train_loader,
        valid_loaders if t.val_every_n_steps else None,
        ckpt_path=ckpt,
        weights_only=True,
    )
    if trainer.interrupted:  # Ctrl-C: the state may be mid-step; keep the last periodic save
        return output
    # exactly where training stopped (the periodic save may be up to N steps older)
    trainer.save_checkpoint(checkpoint_dir / LAST, weights_only=False)
    if export and trainer.is_global_zero:
        best = [c.best_model_path for c in trainer.checkpoint_callbacks if c.monitor]
        export_checkpoint((best and best[0]) or checkpoint_dir / LAST, output / "model")
    return output


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def export_checkpoint(
    checkpoint: str | os.PathLike,
    directory: str | os.PathLike,
    *,
    fp16: bool = False,
    raw: bool = False,
    sampler: dict | None = None,
) -> Path:
    """Training checkpoint -> inference model folder (``save_pretrained``): EMA weights unless
    ``raw``, float16 with ``fp16``; ``sampler`` replaces fields of the default inference settings
    (e.g. ``{"mode": "predictive"}``). Loads with ``weights_only=True``: no unpickling."""
    from dataclasses import asdict, replace

    import torch

    from .checkpoint import build_model, save_pretrained
    from .config import ModelConfig, SamplerConfig
    from .convert import load_lightning_checkpoint

    state = load_lightning_checkpoint(checkpoint)  # one-line errors; never unpickles
    info = state.get("audiodiff")
    if info is None:
        raise ValueError(f"{checkpoint}: not an audiodiff training checkpoint")
    config = ModelConfig.from_dict(info["model_config"])
    if sampler:  # strict: an unknown key is named
        config = replace(config, sampler=SamplerConfig.from_dict(asdict(config.sampler) | sampler))
    prefix = "model." if raw else "ema."
    weights = {k[len(prefix) :]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    model = build_model(config)
    model.load_state_dict(weights, strict=True)
    extra = {
        "training": {
            "checkpoint": Path(checkpoint).name,
            "weights": "raw" if raw else "ema",
            "global_step": state.get("global_step"),
            "recipe": info.get("recipe"),
        }
    }
    dtype = torch.float16 if fp16 else None
    return save_pretrained(model, config, directory, dtype=dtype, extra=extra)


# -- command line ----------------------------------------------------------------------------


def _train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("recipe", help="recipe YAML file (see recipes/)")
    parser.add_argument(
        "overrides", nargs="*", help="dotted KEY=VALUE overrides, e.g. train.max_steps=20"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="continue OUTPUT/checkpoints/last.ckpt"
    )
    group.add_argument("--resume-from", metavar="CKPT", help="continue from this checkpoint")
    add_threads_option(parser)
    return parser


def _export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("checkpoint", help="training checkpoint (.ckpt) written by audiodiff train")
    parser.add_argument("-o", "--output", required=True, help="model folder to write")
    parser.add_argument("--fp16", action="store_true", help="store float16 weights (half size)")
    parser.add_argument("--raw", action="store_true", help="raw weights instead of the EMA")
    parser.add_argument(
        "--sampler",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="default inference settings to store, e.g. mode=predictive steps=5",
    )
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    from .training.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    output = train(recipe, resume=args.resume, resume_from=args.resume_from)
    print(f"run folder: {output}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .training.recipe import RecipeError, apply_overrides

    try:  # the recipes' KEY=VALUE parsing (values read as YAML)
        sampler = apply_overrides({}, args.sampler)
    except RecipeError as err:
        raise SystemExit(f"error: --sampler: {err}") from None
    out = export_checkpoint(
        args.checkpoint, args.output, fp16=args.fp16, raw=args.raw, sampler=sampler
    )
    print(f"wrote {out}")
    return 0


def add_train_parser(sub) -> argparse.ArgumentParser:
    """Add ``train`` to an argparse sub-parser set; sets ``func=cmd_train``."""
    parser = sub.add_parser("train", help="train a model from a recipe YAML (Lightning, DDP)")
    _train_arguments(parser).set_defaults(func=cmd_train)
    return parser


def add_export_parser(sub) -> argparse.ArgumentParser:
    """Add ``export`` to an argparse sub-parser set; sets ``func=cmd_export``."""
    parser = sub.add_parser("export", help="training checkpoint -> inference model folder")
    _export_arguments(parser).set_defaults(func=cmd_export)
    return parser


def main_train(argv: list[str] | None = None) -> int:
    """``audiodiff train`` as a function (raises on errors)."""
    parser = argparse.ArgumentParser(prog="audiodiff train", description="train from a recipe")
    args = _train_arguments(parser).parse_args(argv)
    apply_threads(args.threads)
    return cmd_train(args)


def main_export(argv: list[str] | None = None) -> int:
    """``audiodiff export`` as a function (raises on errors)."""
    parser = argparse.ArgumentParser(prog="audiodiff export", description=cmd_export.__doc__)
    return cmd_export(_export_arguments(parser).parse_args(argv))


if __name__ == "__main__":  # python -m audiodiff.train (what torchrun -m runs)
    try:
        sys.exit(main_train())
    except (FileNotFoundError, ValueError) as err:  # RecipeError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
