"""Convert an official SGMSE+ Lightning checkpoint (sp-uhh/sgmse, ``ncsnpp``) to our format.

The official ``.ckpt`` holds ``state_dict`` (network weights under ``dnn.*``), ``ema`` (torch_ema
state: a ``shadow_params`` list in parameter order) and ``hyper_parameters``. We keep the EMA
weights, as the authors evaluate with them, and rebuild the config from the hyper-parameters.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import torch

from .checkpoint import build_model, save_pretrained
from .config import ModelConfig, SamplerConfig
from .errors import InputError
from .nets import NCSNppConfig, convert_reference_state_dict
from .spec import SpecConfig

DNN_PREFIX = "dnn."
FOURIER_KEY = "all_modules.0.W"  # the reference's fixed Gaussian Fourier projection
ZIP_MAGIC = b"PK\x03\x04"


def _first_sentence(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text.split(". ")[0].rstrip(".")


def load_lightning_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict:
    """Load a ``.ckpt``; only tensors and plain containers unless ``trust_pickle`` is given.

    Anything that is not a readable PyTorch checkpoint holding a dict (a folder, an empty or
    text file, a wav, a truncated file) raises :class:`~audiodiff.errors.InputError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a folder, not a checkpoint file (.ckpt)")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file, not a checkpoint")
    head = path.read_bytes()[:4] if path.is_file() else b""
    if not head.startswith((ZIP_MAGIC, b"\x80")):  # torch.save: a zip archive (or a pickle)
        raise InputError(path, f"not a PyTorch checkpoint (it starts with {head!r})")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            state = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as err:
        if "weights only" not in str(err).lower():
            raise InputError(path, f"not a PyTorch checkpoint ({_first_sentence(err)})") from None
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        raise InputError(
            path,
            f"holds Python objects beyond tensors ({found[1] if found else 'not weights only'})"
            "; if you trust the file, pass --trust-pickle",
        ) from None
    except (EOFError, RuntimeError, KeyError, IndexError, ValueError, OSError) as err:
        raise InputError(
            path, f"truncated or corrupt PyTorch checkpoint ({_first_sentence(err)})"
        ) from None
    if not isinstance(state, dict):
        raise InputError(path, f"holds a {type(state).__name__}, not a checkpoint dict")
    return state


def config_from_hparams(hp: dict) -> ModelConfig:
    """Our ModelConfig from the reference's hyper_parameters (its defaults where absent)."""
    if hp.get("backbone", "ncsnpp") != "ncsnpp" or hp.get("sde", "ouve") != "ouve":
        raise ValueError(
            f"only backbone 'ncsnpp' with sde 'ouve' converts, got "
            f"{hp.get('backbone')!r} / {hp.get('sde')!r}"
        )
    n_fft = int(hp.get("n_fft", 510))
    backbone = NCSNppConfig(
        nf=int(hp.get("nf", 128)),
        ch_mult=tuple(hp.get("ch_mult", (1, 1, 2, 2, 2, 2, 2))),
        num_res_blocks=int(hp.get("num_res_blocks", 2)),
        attn_resolutions=tuple(hp.get("attn_resolutions", (16,))),
        num_freqs=n_fft // 2 + 1,
    )
    spec = SpecConfig(
        sample_rate=int(hp.get("sr", 16000)),
        n_fft=n_fft,
        hop_length=int(hp.get("hop_length", 128)),
        window=hp.get("window", "hann"),
        alpha=float(hp.get("spec_abs_exponent", 0.5)),
        beta=float(hp.get("spec_factor", 0.15)),
    )
    sde = {
        "name": "ouve",
        "theta": float(hp.get("theta", 1.5)),
        "sigma_min": float(hp.get("sigma_min", 0.05)),
        "sigma_max": float(hp.get("sigma_max", 0.5)),
        "T": 1.0,
    }
    sampler = SamplerConfig(steps=int(hp.get("N", 30)), t_eps=float(hp.get("t_eps", 0.03)))
    return ModelConfig(backbone=backbone, sde=sde, spec=spec, sampler=sampler)


def ema_state_dict(network: dict[str, torch.Tensor], ema: dict) -> dict[str, torch.Tensor]:
    """Pair torch_ema's ``shadow_params`` (parameter order) with the network's state-dict keys.

    Non-trainable parameters (the fixed Fourier projection) may be absent from the shadow
    list; they keep their raw values. Every pairing is shape-checked.
    """
    shadow = list(ema["shadow_params"])
    keys = list(network)
    if len(shadow) != len(keys):
        keys = [k for k in keys if k != FOURIER_KEY]  # torch_ema skips the frozen Fourier features
    if len(shadow) != len(keys):
        raise ValueError(f"EMA has {len(shadow)} tensors, the network {len(network)}")
    averaged = dict(network)
    for key, value in zip(keys, shadow):
        if tuple(value.shape) != tuple(network[key].shape):
            raise ValueError(
                f"EMA tensor for {key} has shape {tuple(value.shape)}, "
                f"expected {tuple(network[key].shape)}"
            )
        averaged[key] = value
    return averaged


def convert_sgmse_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    use_ema: bool = True,
    trust_pickle: bool = False,
) -> Path:
    """Official SGMSE+ ``.ckpt`` -> our checkpoint folder; returns the folder."""
    ckpt = load_lightning_checkpoint(ckpt_path, trust_pickle=trust_pickle)
    if "state_dict" not in ckpt:
        raise ValueError(f"{ckpt_path}: no 'state_dict' (not a Lightning checkpoint)")
    network = {
        k[len(DNN_PREFIX) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(DNN_PREFIX)
    }
    if not network:
        raise ValueError(f"{ckpt_path}: no '{DNN_PREFIX}*' weights in its state_dict")
    if use_ema and ckpt.get("ema") is not None:
        network = ema_state_dict(network, ckpt["ema"])
    config = config_from_hparams(dict(ckpt.get("hyper_parameters", {})))
    model = build_model(config)
    model.backbone.load_state_dict(convert_reference_state_dict(network, config.backbone))
    return save_pretrained(model, config, out_dir, extra={"converted_from": Path(ckpt_path).name})
