import json

import pytest
import torch

from audiodiff.checkpoint import CONFIG_FILE, WEIGHTS_FILE, load_pretrained, save_pretrained
from audiodiff.config import ModelConfig


def test_save_load_gives_identical_outputs(tiny_model_dir):
    model, config = load_pretrained(tiny_model_dir)
    again, _ = load_pretrained(tiny_model_dir)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, 256, 64, dtype=torch.complex64, generator=gen)
    y = torch.randn(1, 1, 256, 64, dtype=torch.complex64, generator=gen)
    t = torch.tensor([0.4])
    with torch.no_grad():
        assert torch.equal(model(x, y, t), again(x, y, t))
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]


def test_config_round_trip_and_versions(tiny_model_dir):
    document = json.loads((tiny_model_dir / CONFIG_FILE).read_text())
    assert set(document["versions"]) >= {"format", "audiodiff", "torch"}
    config = ModelConfig.from_dict(document["config"])
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert config.sampler.steps == 3 and config.backbone.nf == config.to_dict()["backbone"]["nf"]


def test_unknown_config_keys_raise(tiny_model_dir):
    d = ModelConfig().to_dict()
    d["sampler"]["stepz"] = 3
    with pytest.raises(ValueError, match="stepz"):
        ModelConfig.from_dict(d)


def test_fp16_checkpoint_loads_as_float32(tmp_path, tiny_model_dir):
    model, config = load_pretrained(tiny_model_dir)
    save_pretrained(model, config, tmp_path / "half", dtype=torch.float16)
    half, _ = load_pretrained(tmp_path / "half")
    p = next(half.parameters())
    assert p.dtype == torch.float32
    assert (tmp_path / "half" / WEIGHTS_FILE).stat().st_size < (
        tiny_model_dir / WEIGHTS_FILE
    ).stat().st_size


def test_missing_model_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pretrained(tmp_path / "nowhere")


def test_loading_never_unpickles(tiny_model_dir):
    # the weights file is safetensors: its header is JSON, not a pickle stream
    head = (tiny_model_dir / WEIGHTS_FILE).read_bytes()[:9]
    assert head[8:9] == b"{"
