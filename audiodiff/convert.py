"""Convert an official sgmse Lightning checkpoint (sp-uhh/sgmse 0.1.x) to our format.

The official ``.ckpt`` holds ``state_dict`` (network weights under ``dnn.*``), ``ema`` (torch_ema
state: a ``shadow_params`` list in parameter order) and ``hyper_parameters``. We keep the EMA
weights, as the authors evaluate with them, and rebuild the config from the hyper-parameters:
backbone ``ncsnpp`` / ``ncsnpp_v2`` / ``ncsnpp_48k``, SDE ``ouve`` / ``sbve``, loss type and
preconditioning (see :func:`config_from_hparams`). docs/models.md lists the official families.
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
from .models import LOSS_TYPES
from .nets import PRESETS, NCSNppConfig, convert_reference_state_dict
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


BACKBONES = ("ncsnpp", "ncsnpp_v2", "ncsnpp_48k")
LEGACY_BACKBONES = ("ncsnpp", "ncsnpp_48k")  # sgmse's forward: score = -DNN([x_t, y], t)


def _refuse(condition: bool, reason: str) -> None:
    if condition:
        raise ValueError(reason)


def _backbone_config(hp: dict, name: str, num_freqs: int) -> NCSNppConfig:
    """The preset of sgmse's backbone ``name`` with the checkpoint's own sizes."""
    preset = PRESETS[name]
    return NCSNppConfig.from_dict(
        {
            **preset.to_dict(),
            "nf": int(hp.get("nf", preset.nf)),
            "ch_mult": list(hp.get("ch_mult", preset.ch_mult)),
            "num_res_blocks": int(hp.get("num_res_blocks", preset.num_res_blocks)),
            "attn_resolutions": list(hp.get("attn_resolutions", preset.attn_resolutions)),
            "num_freqs": num_freqs,
        }
    )


def _parametrisation(hp: dict, backbone: str, sde: str) -> dict:
    """ModelConfig fields of sgmse's ``ScoreModel.forward`` for this checkpoint."""
    loss = hp.get("loss_type", "score_matching")
    _refuse(loss not in LOSS_TYPES, f"unknown loss_type {loss!r} (convertible: {LOSS_TYPES})")
    if backbone in LEGACY_BACKBONES:  # loss-type options only exist for ncsnpp_v2
        _refuse(loss != "score_matching", f"loss_type {loss!r} with backbone {backbone!r}")
        return {}
    _refuse((loss == "data_prediction") != (sde == "sbve"),
            f"loss_type {loss!r} with sde {sde!r} (data_prediction pairs with sbve)")  # fmt: skip
    fields = {
        "loss_type": loss,
        "network_scaling": hp.get("network_scaling"),
        "c_in": str(hp.get("c_in", "1")),
        "c_skip": str(hp.get("c_skip", "0")),
        "c_out": str(hp.get("c_out", "1")),
        "sigma_data": float(hp.get("sigma_data", 0.1)),
        "l1_weight": float(hp.get("l1_weight", 0.001)),
    }
    if loss == "denoiser":  # its forward ignores c_skip / c_out; its loss is weighted
        fields.update(c_skip="0", c_out="1", loss_weighting=hp.get("loss_weighting", "sigma^2"))
    return fields


def _sde_and_sampler(hp: dict, sde: str) -> tuple[dict, SamplerConfig]:
    """Our SDE dict and the sampler sgmse's ``enhance`` would run (its ``sampler_type``, N)."""
    kind = hp.get("sampler_type", "ode" if sde == "sbve" else "pc")
    if sde == "sbve":
        _refuse(kind not in ("ode", "sde"), f"unknown SB sampler_type {kind!r}")
        params = {"name": "sbve", "k": float(hp.get("k", 2.6)), "c": float(hp.get("c", 0.4))}
        return params, SamplerConfig(method=f"sb_{kind}", steps=int(hp.get("N", 50)), t_eps=1e-4)
    _refuse(kind not in ("pc", "ode"), f"unknown sampler_type {kind!r}")
    params = {
        "name": "ouve",
        "theta": float(hp.get("theta", 1.5)),
        "sigma_min": float(hp.get("sigma_min", 0.05)),
        "sigma_max": float(hp.get("sigma_max", 0.5)),
    }
    method = "pc" if kind == "pc" else "ode_heun"  # sgmse's RK45 ODE: our nearest is Heun
    steps, t_eps = int(hp.get("N", 30)), float(hp.get("t_eps", 0.03))
    return {**params, "T": 1.0}, SamplerConfig(method=method, steps=steps, t_eps=t_eps)


def config_from_hparams(hp: dict) -> ModelConfig:
    """Our ModelConfig from the reference's hyper_parameters (its defaults where absent).

    Layouts: ``ncsnpp`` / ``ncsnpp_48k`` + OUVE + score matching (the published SGMSE+, WSJ0 and
    EARS models) and ``ncsnpp_v2`` + OUVE + score matching or denoiser, or + SB-VE + data
    prediction (the "Investigating training objectives" models). Anything else raises a
    ValueError with the reason.
    """
    backbone = hp.get("backbone", "ncsnpp")
    sde = hp.get("sde", "ouve")
    _refuse(backbone not in BACKBONES, f"unknown backbone {backbone!r} (convertible: {BACKBONES})")
    _refuse(sde not in ("ouve", "sbve"), f"unknown sde {sde!r} (convertible: 'ouve', 'sbve')")
    _refuse(hp.get("transform_type", "exponent") != "exponent",
            f"transform_type {hp.get('transform_type')!r} (only 'exponent')")  # fmt: skip
    _refuse(hp.get("normalize", "noisy") != "noisy",
            f"normalize {hp.get('normalize')!r} (audiodiff divides by max|noisy|)")  # fmt: skip
    _refuse(hp.get("centered", True) is not True, "centered=False inputs (2x - 1)")
    _refuse(sde == "sbve" and backbone != "ncsnpp_v2", f"sde 'sbve' with backbone {backbone!r}")
    n_fft = int(hp.get("n_fft", 1534 if backbone == "ncsnpp_48k" else 510))
    spec = SpecConfig(
        sample_rate=int(hp.get("sr", 48000 if backbone == "ncsnpp_48k" else 16000)),
        n_fft=n_fft,
        hop_length=int(hp.get("hop_length", 384 if backbone == "ncsnpp_48k" else 128)),
        window=hp.get("window", "hann"),
        alpha=float(hp.get("spec_abs_exponent", 0.5)),
        beta=float(hp.get("spec_factor", 0.15)),
    )
    sde_params, sampler = _sde_and_sampler(hp, sde)
    return ModelConfig(
        kind="bridge" if sde == "sbve" else "score",
        backbone=_backbone_config(hp, backbone, n_fft // 2 + 1),
        sde=sde_params,
        spec=spec,
        sampler=sampler,
        **_parametrisation(hp, backbone, sde),
    )


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
    """Official sgmse ``.ckpt`` -> our checkpoint folder; returns the folder."""
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
    try:
        config = config_from_hparams(dict(ckpt.get("hyper_parameters", {})))
    except ValueError as err:
        raise ValueError(f"{ckpt_path}: cannot convert: {err}") from None
    model = build_model(config)
    try:
        weights = convert_reference_state_dict(network, config.backbone)
    except ValueError as err:
        raise ValueError(
            f"{ckpt_path}: its weights do not fit its hyper-parameters: {err}"
        ) from None
    model.backbone.load_state_dict(weights)
    return save_pretrained(model, config, out_dir, extra={"converted_from": Path(ckpt_path).name})
