"""The inference checkpoint format: a folder with ``config.json`` and ``model.safetensors``.

A checkpoint is data, never a pickled module: the config rebuilds the model, safetensors holds the
(EMA) weights, and ``versions`` records what wrote it. Files are written atomically (temp file, then
rename).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import safetensors.torch
import torch
from torch import nn

from . import DEFAULT_MODEL, __version__
from .config import ModelConfig
from .errors import InputError
from .files import atomic_write
from .models import PredictiveModel, ScoreModel, StoRM
from .nets import build_backbone
from .sdes import build_sde

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).parent / "assets" / "models"


class ModelNotFoundError(InputError, FileNotFoundError):
    """``--model`` names neither a model folder nor a bundled model."""


def build_model(config: ModelConfig) -> ScoreModel | PredictiveModel | StoRM:
    """Rebuild the model a config describes, with freshly initialised weights."""
    score = predictor = None
    if config.backbone is not None:
        sde = build_sde(config.sde)
        score = ScoreModel(build_backbone(config.backbone), sde, config.parametrisation)
    if config.predictor is not None:
        predictor = PredictiveModel(build_backbone(config.predictor), config.predictor_output)
    if score is not None and predictor is not None:
        return StoRM(predictor, score)
    return score if score is not None else predictor


def bundled_models() -> list[str]:
    """Names of the models shipped inside the package."""
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(p.name for p in BUNDLED_DIR.iterdir() if (p / CONFIG_FILE).is_file())


def resolve_model_dir(name_or_path: str | os.PathLike = DEFAULT_MODEL) -> Path:
    """A bundled model's name or a checkpoint folder -> the folder; clear error otherwise."""
    path = Path(name_or_path)
    if (path / CONFIG_FILE).is_file():
        return path
    if (BUNDLED_DIR / str(name_or_path) / CONFIG_FILE).is_file():
        return BUNDLED_DIR / str(name_or_path)
    known = ", ".join(bundled_models()) or "none"
    raise ModelNotFoundError(
        name_or_path,
        f"not a model folder (no {CONFIG_FILE}) and not a bundled model (bundled: {known})",
    )


def save_pretrained(
    model: nn.Module,
    config: ModelConfig,
    directory: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model``'s weights (optionally cast, e.g. fp16) and ``config`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = {
        k: (v.to(dtype) if dtype and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {"format": FORMAT_VERSION, "audiodiff": __version__, "torch": torch.__version__}
    document = {"config": config.to_dict(), "versions": meta, **(extra or {})}
    atomic_write(
        directory / WEIGHTS_FILE,
        lambda tmp: safetensors.torch.save_file(weights, tmp, metadata={"format": "pt"}),
    )
    atomic_write(
        directory / CONFIG_FILE,
        lambda tmp: Path(tmp).write_text(json.dumps(document, indent=2) + "\n"),
    )
    return directory


def load_config(directory: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a checkpoint folder (or bundled name); InputError naming config.json."""
    path = resolve_model_dir(directory) / CONFIG_FILE
    try:
        document = json.loads(path.read_text())
        return ModelConfig.from_dict(document["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError) as err:
        raise InputError(path, f"invalid model config ({err})") from None


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """``model.safetensors`` of a folder as float32 tensors; InputError if missing or corrupt."""
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise InputError(path, "missing: a model folder holds config.json and model.safetensors")
    try:
        weights = safetensors.torch.load_file(str(path), device="cpu")
    except (safetensors.SafetensorError, OSError, ValueError, RuntimeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(path, f"corrupt or truncated weights file ({reason})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def check_weights_fit(model: nn.Module, weights: dict[str, torch.Tensor], directory: Path) -> None:
    """InputError naming the first tensor whose name or shape the config does not build."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    where = f"{directory / WEIGHTS_FILE} does not fit {CONFIG_FILE}"
    for key, value in weights.items():
        if key not in expected:
            raise InputError(where, f"tensor {key} is not in the model the config builds")
        if tuple(value.shape) != expected[key]:
            raise InputError(
                where,
                f"tensor {key} has shape {tuple(value.shape)}, the config builds {expected[key]}",
            )
    missing = [k for k in expected if k not in weights]
    if missing:
        raise InputError(where, f"tensor {missing[0]} is missing ({len(missing)} missing)")


def load_pretrained(
    name_or_path: str | os.PathLike = DEFAULT_MODEL, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a model from a checkpoint folder (or bundled name) in float32, in eval mode.

    A missing folder, a broken ``config.json``, a missing or corrupt ``model.safetensors`` and
    weights that do not fit the config raise :class:`~audiodiff.errors.InputError` (one line
    naming the file and, for a mismatch, the first tensor).
    """
    directory = resolve_model_dir(name_or_path)
    config = load_config(directory)
    model = build_model(config)
    weights = load_weights(directory)
    check_weights_fit(model, weights, directory)
    model.load_state_dict(weights, strict=True)
    return model.to(device).eval(), config
