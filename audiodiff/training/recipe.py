"""The training recipe: one strict, typed YAML document with sections ``model``, ``data``,
``train`` and ``output``.

Every section is a frozen dataclass with its defaults here; an unknown key anywhere raises a
:class:`RecipeError` that names it by its dotted path (``train.max_step``). ``model`` is a
:class:`~audiodiff.config.ModelConfig` dict (network presets by name), ``data.mix`` a
:class:`~audiodiff.data.MixConfig` dict. Command-line overrides ``a.b.c=value`` are applied to the
YAML document before it is parsed; values are read as YAML scalars (``train.lr=3e-4``,
``model.backbone.ch_mult=[1,2]``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from ..config import ModelConfig
from ..data.datasets import MixConfig

DATA_KINDS = ("paired", "pool")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
LOGGERS = ("csv", "tensorboard")
MONITORS = ("auto", "valid_loss", "pesq", "estoi", "si_sdr")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the offending key."""


@dataclass(frozen=True)
class ValidConfig:
    """Validation data.

    ``base``: a paired layout whose ``valid/`` subset is used (default for paired data: the
    training ``data.base``). Pool data without ``base``: ``mixtures`` fixed seeded mixtures drawn
    from ``holdout_clean`` clean and ``holdout_noise`` noise files that are kept out of training
    (a seeded choice under ``seed``; 0 means: drawn from the training files themselves); the
    evaluation files are whole-utterance mixtures of them.
    """

    base: str | None = None
    mixtures: int = 0
    holdout_clean: int = 0
    holdout_noise: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("mixtures", "holdout_clean", "holdout_noise"):
            if getattr(self, name) < 0:
                raise RecipeError(f"data.valid.{name} must be >= 0")


@dataclass(frozen=True)
class DataConfig:
    """Training data: ``paired`` (``base/{train,valid}/{clean,noisy}``) or ``pool`` (on-the-fly
    mixing of ``clean`` speech, ``noise`` and optional ``rir`` folders with ``mix`` settings;
    ``epoch_size`` items per epoch, default one per clean file)."""

    kind: str = "paired"
    base: str | None = None
    clean: str | None = None
    noise: str | None = None
    rir: str | None = None
    mix: MixConfig = field(default_factory=MixConfig)
    epoch_size: int | None = None
    valid: ValidConfig = field(default_factory=ValidConfig)

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise RecipeError(f"data.kind must be one of {DATA_KINDS}, got {self.kind!r}")
        if self.kind == "paired":
            if self.base is None:
                raise RecipeError("data.base is required for paired data")
            pool_only = [n for n in ("clean", "noise", "rir", "epoch_size") if getattr(self, n)]
            pool_only += ["mix"] if self.mix != MixConfig(sample_rate=self.mix.sample_rate) else []
            v = self.valid
            pool_only += [
                f"valid.{n}"
                for n in ("mixtures", "holdout_clean", "holdout_noise")
                if getattr(v, n)
            ]
            if pool_only:
                raise RecipeError(f"data.{pool_only[0]} applies to pool data only (data.kind)")
            return
        for name in ("clean", "noise"):
            if getattr(self, name) is None:
                raise RecipeError(f"data.{name} is required for pool data")
        if self.base is not None:
            raise RecipeError("data.base applies to paired data only; use data.valid.base")
        if self.valid.base is None and self.valid.mixtures == 0:
            raise RecipeError("pool data needs data.valid.mixtures > 0 or data.valid.base")
        if self.epoch_size is not None and self.epoch_size < 1:
            raise RecipeError("data.epoch_size must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, loss, validation and hardware settings (SGMSE+ defaults: Adam 1e-4, EMA
    0.999, batch 8 per device, crops of 256 frames, 20 evaluation files)."""

    batch_size: int = 8
    crop_frames: int = 256
    lr: float = 1e-4
    lr_final: float | None = None  # cosine decay from lr to this at max_steps; null: constant
    ema_decay: float = 0.999
    grad_clip: float | None = None
    max_steps: int = 100_000
    stop_step: int | None = None  # end the run here, the lr schedule still running to max_steps
    t_eps: float | None = None  # smallest training time t; null: the model's sampler.t_eps
    t_end_prob: float = 0.0  # bridge: share of examples at t = T (x_t is the prior)
    alpha: float = 0.5  # StoRM: α·L_pred + (1 − α)·DSM
    score_task_prob: float = 0.0  # StoRM: share of examples trained as plain SGMSE+
    spectral_weight: float = 0.0  # DDSP multi-scale spectral loss on Ŷ (or the bridge's x̂0)
    loudness_weight: float = 0.0  # bridge: PESQ-shaped loudness-disturbance loss of x̂0
    freeze_predictor: bool = False  # StoRM with a fixed (pre-trained) predictive stage
    init_predictor: str | None = None  # model folder whose predictor initialises ours
    init_model: str | None = None  # model folder (same architecture) whose weights start training
    warm_start: str | None = None  # model folder whose time-free predictor starts the backbone
    precision: str = "auto"  # bf16-mixed on CUDA, else 32-true
    val_every_n_steps: int = 1000  # 0: no validation
    checkpoint_every_n_steps: int | None = None  # last.ckpt cadence; default val_every_n_steps
    num_eval_files: int = 20
    monitor: str = "auto"  # best checkpoint: si_sdr (max) with eval files, else valid_loss
    num_workers: int = 4
    seed: int = 0
    log: str = "csv"
    log_every_n_steps: int = 50
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    progress_bar: bool = True

    def __post_init__(self) -> None:
        positive = ("batch_size", "crop_frames", "max_steps", "log_every_n_steps", "num_nodes")
        for name in positive:
            if getattr(self, name) < 1:
                raise RecipeError(f"train.{name} must be positive")
        for name in ("val_every_n_steps", "num_eval_files", "num_workers"):
            if getattr(self, name) < 0:
                raise RecipeError(f"train.{name} must be >= 0")
        if self.checkpoint_every_n_steps is not None and self.checkpoint_every_n_steps < 1:
            raise RecipeError("train.checkpoint_every_n_steps must be positive")
        if not (self.lr > 0 and 0 <= self.ema_decay < 1 and 0 <= self.alpha <= 1):
            raise RecipeError("need train.lr > 0, 0 <= train.ema_decay < 1, 0 <= train.alpha <= 1")
        if self.lr_final is not None and not 0 <= self.lr_final <= self.lr:
            raise RecipeError("need 0 <= train.lr_final <= train.lr (or null: constant lr)")
        if not 0 <= self.score_task_prob <= 1 or self.spectral_weight < 0:
            raise RecipeError("need 0 <= train.score_task_prob <= 1, train.spectral_weight >= 0")
        if self.t_eps is not None and not 0 < self.t_eps < 1:
            raise RecipeError("need 0 < train.t_eps < 1 (or null: the sampler's t_eps)")
        if self.stop_step is not None and not 1 <= self.stop_step <= self.max_steps:
            raise RecipeError("need 1 <= train.stop_step <= train.max_steps (or null)")
        if self.loudness_weight < 0:
            raise RecipeError("train.loudness_weight must be >= 0")
        if not 0 <= self.t_end_prob < 1:
            raise RecipeError("need 0 <= train.t_end_prob < 1")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise RecipeError("train.grad_clip must be positive (or null: no clipping)")
        for name, allowed in (("precision", PRECISIONS), ("log", LOGGERS), ("monitor", MONITORS)):
            if getattr(self, name) not in allowed:
                raise RecipeError(f"train.{name} must be one of {allowed}")
        needs = {"valid_loss": self.val_every_n_steps, "auto": 1}.get(self.monitor)
        if not (needs if needs is not None else self.num_eval_files and self.val_every_n_steps):
            raise RecipeError(f"train.monitor {self.monitor!r} needs validation (and eval files)")
        if self.devices != "auto" and not (isinstance(self.devices, int) and self.devices >= 1):
            raise RecipeError(
                f"train.devices must be 'auto' or a positive int, got {self.devices!r}"
            )

    @property
    def last_every_n_steps(self) -> int:
        return self.checkpoint_every_n_steps or self.val_every_n_steps or 1000


@dataclass(frozen=True)
class Recipe:
    """A whole training recipe; ``output`` is the run folder (checkpoints, logs, exported model)."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    output: str

    def __post_init__(self) -> None:
        self._check_kind_settings()
        if self.data.mix.sample_rate != self.model.spec.sample_rate:
            raise RecipeError(
                f"data.mix.sample_rate ({self.data.mix.sample_rate}) differs from "
                f"model.spec.sample_rate ({self.model.spec.sample_rate})"
            )
        for name in ("backbone", "predictor"):
            net = getattr(self.model, name)
            if net is not None and self.train.crop_frames % net.downsampling_factor:
                raise RecipeError(
                    f"train.crop_frames ({self.train.crop_frames}) must be a multiple of "
                    f"model.{name}'s downsampling factor {net.downsampling_factor}"
                )

    def _check_kind_settings(self) -> None:
        kind, default = self.model.kind, TrainConfig()
        storm_only = ("alpha", "score_task_prob", "freeze_predictor", "init_predictor")
        with_predictor = kind == "bridge" and self.model.predictor is not None
        for name in storm_only if kind != "storm" else ():
            if getattr(self.train, name) != getattr(default, name):
                ok = name == "init_predictor" and kind == "predictive"
                ok = ok or (with_predictor and name in ("freeze_predictor", "init_predictor"))
                if not ok:
                    raise RecipeError(
                        f"train.{name} applies to storm models (and bridges with a predictor), "
                        f"not {kind!r}"
                    )
        for name in ("t_end_prob", "loudness_weight"):
            if kind != "bridge" and getattr(self.train, name):
                raise RecipeError(f"train.{name} applies to bridge models, not {kind!r}")
        if kind == "score" and self.train.spectral_weight:
            raise RecipeError("train.spectral_weight needs a data estimate (not a score model)")
        if self.train.warm_start and (kind == "predictive" or self.train.init_model):
            raise RecipeError("train.warm_start needs a time-conditional backbone, no init_model")
        if self.train.freeze_predictor and self.train.init_predictor is None:
            raise RecipeError("train.freeze_predictor needs train.init_predictor (a trained one)")

    @property
    def crop_samples(self) -> int:
        """Waveform crop giving ``crop_frames`` centred STFT frames: (frames − 1)·hop."""
        return (self.train.crop_frames - 1) * self.model.spec.hop_length

    def to_dict(self) -> dict:
        """Plain YAML/JSON/checkpoint-friendly dict (lists, not tuples) that parses back."""
        data = dataclasses.asdict(self.data)
        data["mix"] = self.data.mix.to_dict()
        doc = {
            "model": self.model.to_dict(),
            "data": data,
            "train": dataclasses.asdict(self.train),
            "output": self.output,
        }
        return _plain(doc)

    @classmethod
    def from_dict(cls, doc: Mapping) -> Recipe:
        return parse_recipe(doc)


def _plain(value):
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _type_name(hint) -> str:
    return getattr(hint, "__name__", str(hint))


def _coerce(value, hint, path: str):
    """Check (and where lossless, convert) a YAML value against a field's type."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _coerce(value, option, path)
            except RecipeError:
                continue
        names = " or ".join(_type_name(o) for o in options)
        raise RecipeError(f"{path}: expected {names}, got {value!r}")
    if hint is float and isinstance(value, str):
        try:  # PyYAML reads 1e-4 (no dot) as a string
            return float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (bool, str) and isinstance(value, hint):
        return value
    raise RecipeError(f"{path}: expected {_type_name(hint)}, got {value!r}")


def _section(cls, doc, path: str, nested: Mapping | None = None):
    """Build dataclass ``cls`` from ``doc`` strictly; ``nested`` maps field -> builder."""
    if not isinstance(doc, Mapping):
        raise RecipeError(f"{path}: expected a mapping, got {doc!r}")
    known = [f.name for f in fields(cls)]
    for key in doc:
        if key not in known:
            raise RecipeError(f"unknown key '{path}.{key}'; known keys in {path}: {known}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in doc.items():
        build = (nested or {}).get(key)
        kwargs[key] = build(value) if build else _coerce(value, hints[key], f"{path}.{key}")
    try:
        return cls(**kwargs)
    except RecipeError:
        raise
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{path}: {err}") from None


def _wrapped(path: str, build):
    def run(value):
        if not isinstance(value, Mapping):
            raise RecipeError(f"{path}: expected a mapping, got {value!r}")
        try:
            return build(dict(value))
        except RecipeError:
            raise
        except (TypeError, ValueError) as err:
            raise RecipeError(f"{path}: {err}") from None

    return run


def parse_recipe(doc: Mapping) -> Recipe:
    """A recipe document (YAML mapping) -> :class:`Recipe`, strictly."""
    if not isinstance(doc, Mapping):
        raise RecipeError(f"a recipe must be a mapping, got {type(doc).__name__}")
    for key in doc:
        if key not in ("model", "data", "train", "output"):
            raise RecipeError(f"unknown key '{key}'; a recipe has model, data, train, output")
    for key in ("model", "data", "output"):
        if doc.get(key) is None:
            raise RecipeError(f"the recipe needs a '{key}' section")
    model = _wrapped("model", ModelConfig.from_dict)(doc["model"])
    data_doc = doc["data"]
    if not isinstance(data_doc, Mapping) or not isinstance(data_doc.get("mix") or {}, Mapping):
        raise RecipeError(f"data and data.mix must be mappings, got {data_doc!r}")
    # the mixing rate follows the model's unless the recipe sets it
    mix_doc = {"sample_rate": model.spec.sample_rate, **(data_doc.get("mix") or {})}
    data = _section(
        DataConfig,
        {**data_doc, "mix": mix_doc},
        "data",
        {
            "mix": _wrapped("data.mix", MixConfig.from_dict),
            "valid": lambda v: _section(ValidConfig, v or {}, "data.valid"),
        },
    )
    train = _section(TrainConfig, doc.get("train") or {}, "train")
    output = _coerce(doc["output"], str, "output")
    return Recipe(model=model, data=data, train=train, output=output)


def apply_overrides(doc: Mapping, overrides: list[str]) -> dict:
    """Set dotted keys of a recipe document: ``["train.max_steps=20", "model.backbone.nf=16"]``.

    A network given as a preset name becomes ``{"preset": name}`` when a field under it is set.
    """
    doc = copy.deepcopy(dict(doc))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} is not KEY=VALUE (e.g. train.max_steps=20)")
        parts = key.split(".")
        node = doc
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif isinstance(child, str) and parts[0] == "model" and depth == 1:
                child = node[part] = {"preset": child}
            elif not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise RecipeError(f"override {item!r}: {where} is not a mapping")
            node = child
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    return doc


def load_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> Recipe:
    """Read a recipe YAML file, apply ``overrides`` and parse it strictly."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({err})") from None
    try:
        return parse_recipe(apply_overrides(doc or {}, list(overrides)))
    except RecipeError as err:
        raise RecipeError(f"{path}: {err}") from None
