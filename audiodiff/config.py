"""Typed, strict model configuration: everything needed to rebuild a model without code changes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .nets import PRESETS, NCSNppConfig
from .sdes import build_sde
from .spec import SpecConfig

SAMPLERS = ("pc", "ode_euler", "ode_heun")
PREDICTORS = ("reverse_diffusion", "euler_maruyama")
MODEL_KINDS = ("score",)


def _strict_kwargs(cls, d: dict, what: str) -> dict:
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings: {sorted(unknown)}")
    return dict(d)


@dataclass(frozen=True)
class SamplerConfig:
    """Default reverse-process settings (SGMSE+: PC, 30 steps, one corrector step, r = 0.5)."""

    method: str = "pc"
    steps: int = 30
    corrector_steps: int = 1
    snr: float = 0.5
    predictor: str = "reverse_diffusion"
    t_eps: float = 0.03

    def __post_init__(self) -> None:
        if self.method not in SAMPLERS:
            raise ValueError(f"sampler method must be one of {SAMPLERS}, got {self.method!r}")
        if self.predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {self.predictor!r}")
        if self.steps < 1 or self.corrector_steps < 0 or self.snr <= 0 or not 0 < self.t_eps < 1:
            raise ValueError("need steps >= 1, corrector_steps >= 0, snr > 0 and 0 < t_eps < 1")

    @classmethod
    def from_dict(cls, d: dict) -> SamplerConfig:
        return cls(**_strict_kwargs(cls, d, "sampler"))


def _default_sde() -> dict:
    return {"name": "ouve", "theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "T": 1.0}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, SDE, STFT and sampler defaults of one model (stored as config.json)."""

    kind: str = "score"
    backbone: NCSNppConfig = field(default_factory=NCSNppConfig)
    sde: dict = field(default_factory=_default_sde)
    spec: SpecConfig = field(default_factory=SpecConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    output_scaling: str = "1/t"

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.backbone.num_freqs != self.spec.num_freqs:
            raise ValueError(
                f"backbone.num_freqs ({self.backbone.num_freqs}) must equal the STFT's "
                f"frequency bins ({self.spec.num_freqs})"
            )
        build_sde(self.sde)  # validates name and parameters

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "backbone": self.backbone.to_dict(),
            "sde": dict(self.sde),
            "spec": self.spec.to_dict(),
            "sampler": dataclasses.asdict(self.sampler),
            "output_scaling": self.output_scaling,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = _strict_kwargs(cls, d, "model")
        backbone = d.get("backbone", {})
        if isinstance(backbone, str):
            backbone = PRESETS[backbone]
        elif isinstance(backbone, dict):
            preset = backbone.get("preset")
            base = PRESETS[preset].to_dict() if preset else {}
            backbone = NCSNppConfig.from_dict(
                {**base, **{k: v for k, v in backbone.items() if k != "preset"}}
            )
        d["backbone"] = backbone
        d["sde"] = dict(d.get("sde", _default_sde()))
        d["spec"] = SpecConfig.from_dict(d.get("spec", {}))
        d["sampler"] = SamplerConfig.from_dict(d.get("sampler", {}))
        return cls(**d)
