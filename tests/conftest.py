import importlib.util
import os
from pathlib import Path

import pytest
import torch

from audiodiff.checkpoint import build_model, save_pretrained
from audiodiff.config import ModelConfig, SamplerConfig
from audiodiff.nets import PRESETS

# CI runs alone on 2 cores; set AUDIODIFF_TEST_THREADS=1 when something else is busy on them
torch.set_num_threads(int(os.environ.get("AUDIODIFF_TEST_THREADS", "2")))

EVAL = Path(__file__).resolve().parents[1] / "eval"


@pytest.fixture(scope="session")
def eval_script():
    """``eval_script(name)``: ``eval/NAME.py`` loaded as a module (eval/ is not a package)."""

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, EVAL / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """An untrained ncsnpp_tiny score model saved in our checkpoint format (few sampler steps)."""
    torch.manual_seed(0)
    config = ModelConfig(backbone=PRESETS["ncsnpp_tiny"], sampler=SamplerConfig(steps=3))
    model = build_model(config)
    return save_pretrained(model, config, tmp_path_factory.mktemp("models") / "tiny")
