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
from .files import atomic_write
from .models import PredictiveModel, ScoreModel, StoRM
from .nets import build_backbone
from .sdes import build_sde

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).parent / "assets" / "models"


def build_model(config: ModelConfig) -> ScoreModel | PredictiveModel | StoRM:
    """Rebuild the model a config describes, with freshly initialised weights."""
    score = predictor = None
    if config.backbone is not None:
        sde = build_sde(config.sde)
        score = ScoreModel(build_backbone(config.backbone), sde, config.parametrisation)
    if config.predictor is not None:
        predictor = PredictiveModel(build_backbone(config.predictor))
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
    raise FileNotFoundError(
        f"{name_or_path}: not a model folder (no {CONFIG_FILE}) and not a bundled model "
        f"(bundled: {known})"
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
    path = resolve_model_dir(directory) / CONFIG_FILE
    try:
        document = json.loads(path.read_text())
        return ModelConfig.from_dict(document["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid model config ({err})") from None


def load_pretrained(
    name_or_path: str | os.PathLike = DEFAULT_MODEL, device: torch.device | str = "cpu"
) -> tuple[nn.Module, ModelConfig]:
    """Rebuild a model from a checkpoint folder (or bundled name) in float32, in eval mode."""
    directory = resolve_model_dir(name_or_path)
    config = load_config(directory)
    model = build_model(config)
    weights = safetensors.torch.load_file(str(directory / WEIGHTS_FILE), device="cpu")
    weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    model.load_state_dict(weights, strict=True)
    return model.to(device).eval(), config
