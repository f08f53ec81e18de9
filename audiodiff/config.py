"""Typed, strict model configuration: everything needed to rebuild a model without code changes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .losses import LOSS_WEIGHTINGS
from .models import PREDICTOR_OUTPUTS, Parametrisation
from .nets import PRESETS, NCSNppConfig
from .sdes import build_sde
from .spec import SpecConfig

SB_SAMPLERS = ("sb_ode", "sb_sde")  # Schrödinger-bridge sampler (sample_sb), ODE / SDE form
SAMPLERS = ("pc", "ode_euler", "ode_heun", *SB_SAMPLERS)
MODEL_TIMES = ("current", "previous")  # the time the SB sampler gives its network (sample_sb)
PREDICTORS = ("reverse_diffusion", "euler_maruyama")
MODEL_KINDS = ("score", "storm", "predictive", "bridge")
# which inference modes each kind of model can run; the first is its default
MODES = {
    "score": ("score",),
    "storm": ("storm", "predictive", "score"),
    "predictive": ("predictive",),
    "bridge": ("bridge",),
}
ALL_MODES = ("storm", "predictive", "score", "bridge")
# a bridge with a predictive stage (bridge from Ŷ: prior x_T = Ŷ, conditioning [y, Ŷ])
BRIDGE_FROM_PREDICTION_MODES = ("bridge", "predictive")


def _strict_kwargs(cls, d: dict, what: str) -> dict:
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} settings: {sorted(unknown)}")
    return dict(d)


@dataclass(frozen=True)
class SamplerConfig:
    """Default inference settings (SGMSE+: PC, 30 steps, one corrector step, r = 0.5).

    ``mode`` is ``storm``, ``score``, ``predictive`` or ``bridge``; None means the model kind's
    default. ``method`` ``sb_ode`` / ``sb_sde`` is the Schrödinger-bridge sampler (bridge models
    only): ``steps`` network calls on ``steps + 1`` grid times from T to ``t_eps``; its network
    is told each step's target time (``model_time`` ``current``, as sgmse) or the time of the
    state it is given (``previous``: the first call sees the prior at t = T).
    """

    mode: str | None = None
    method: str = "pc"
    steps: int = 30
    corrector_steps: int = 1
    snr: float = 0.5
    predictor: str = "reverse_diffusion"
    t_eps: float = 0.03
    model_time: str = "current"

    def __post_init__(self) -> None:
        if self.method not in SAMPLERS:
            raise ValueError(f"sampler method must be one of {SAMPLERS}, got {self.method!r}")
        if self.predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {PREDICTORS}, got {self.predictor!r}")
        if self.mode is not None and self.mode not in ALL_MODES:
            raise ValueError(f"mode must be one of {ALL_MODES}, got {self.mode!r}")
        if self.model_time not in MODEL_TIMES:
            raise ValueError(f"model_time must be one of {MODEL_TIMES}, got {self.model_time!r}")
        if self.steps < 0 or self.corrector_steps < 0 or self.snr <= 0 or not 0 < self.t_eps < 1:
            raise ValueError("need steps >= 0, corrector_steps >= 0, snr > 0 and 0 < t_eps < 1")

    @classmethod
    def from_dict(cls, d: dict) -> SamplerConfig:
        return cls(**_strict_kwargs(cls, d, "sampler"))


def _network_config(spec) -> NCSNppConfig | None:
    """None, a preset name, or a dict (``preset`` plus overrides) -> NCSNppConfig."""
    if spec is None or isinstance(spec, NCSNppConfig):
        return spec
    if isinstance(spec, str):
        spec = {"preset": spec}
    preset = spec.get("preset")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; known: {sorted(PRESETS)}")
    base = PRESETS[preset].to_dict() if preset else {}
    return NCSNppConfig.from_dict({**base, **{k: v for k, v in spec.items() if k != "preset"}})


_PARAMETRISATION_FIELDS = (
    "loss_type", "network_scaling", "c_in", "c_skip", "c_out", "sigma_data", "loss_weighting",
    "l1_weight",
)  # fmt: skip


def _default_sde() -> dict:
    return {"name": "ouve", "theta": 1.5, "sigma_min": 0.05, "sigma_max": 0.5, "T": 1.0}


_PARAMETRISATION = Parametrisation()  # the 2023 SGMSE+ network


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, SDE, STFT and sampler defaults of one model (stored as config.json).

    ``kind`` is ``score`` (SGMSE+: ``backbone`` is the score network, 4 input channels),
    ``predictive`` (``predictor`` alone: no time input, 2 input channels), ``storm`` (both; the
    score network sees [x_t, y, Ŷ], 6 input channels) or ``bridge`` (Schrödinger bridge: SB-VE
    SDE, ``backbone`` predicts x̂0 from [x_t, y], sampled with ``sb_ode`` / ``sb_sde``). A
    ``bridge`` with a ``predictor`` bridges from Ŷ instead of y (prior x_T = Ŷ, the backbone sees
    [x_t, y, Ŷ], 6 input channels) and also runs the ``predictive`` mode.

    The parametrisation (see :mod:`audiodiff.models`): ``loss_type``, ``network_scaling``,
    ``c_in``, ``c_skip``, ``c_out``, ``sigma_data``; training-only: ``loss_weighting`` (λ of the
    denoiser loss) and ``l1_weight`` (time-domain term of the data-prediction loss). The
    defaults are the 2023 SGMSE+ network; ``output_scaling`` in older config files is read as
    ``network_scaling``. ``predictor_output`` (``estimate`` or ``mask``) says whether the
    predictor's output is Ŷ itself or a complex ratio mask around the identity (Ŷ = y·(1 + F)).
    """

    kind: str = "score"
    backbone: NCSNppConfig | None = field(default_factory=NCSNppConfig)
    predictor: NCSNppConfig | None = None
    sde: dict = field(default_factory=_default_sde)
    spec: SpecConfig = field(default_factory=SpecConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    # the Parametrisation's fields, flat in config.json; its defaults are the one source
    loss_type: str = _PARAMETRISATION.loss_type
    network_scaling: str | None = _PARAMETRISATION.network_scaling
    c_in: str = _PARAMETRISATION.c_in
    c_skip: str = _PARAMETRISATION.c_skip
    c_out: str = _PARAMETRISATION.c_out
    sigma_data: float = _PARAMETRISATION.sigma_data
    loss_weighting: str = "sigma^2"
    l1_weight: float = 0.001
    predictor_output: str = "estimate"  # the predictor's F: Ŷ = F, or the mask of Ŷ = y·(1 + F)

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        needs = {"score": ("backbone",), "predictive": ("predictor",), "bridge": ("backbone",)}
        for name in ("backbone", "predictor"):
            required = name in needs.get(self.kind, ("backbone", "predictor"))
            optional = self.kind == "bridge" and name == "predictor"
            net = getattr(self, name)
            self._check_network(name, net, required or (optional and net is not None))
        if self.sampler.mode is not None and self.sampler.mode not in self.modes:
            raise ValueError(f"a {self.kind!r} model cannot run mode {self.sampler.mode!r}")
        build_sde(self.sde)  # validates name and parameters
        _ = self.parametrisation  # validates the choices
        self._check_combination()

    @property
    def parametrisation(self) -> Parametrisation:
        fields = dataclasses.fields(Parametrisation)
        return Parametrisation(**{f.name: getattr(self, f.name) for f in fields})

    def _check_combination(self) -> None:
        """Pairs of settings that cannot work, one line each."""
        bridge, loss, method = self.kind == "bridge", self.loss_type, self.sampler.method
        if bridge != (self.sde.get("name") == "sbve"):
            raise ValueError(
                f"sde {self.sde.get('name')!r} cannot drive a {self.kind!r} model "
                "(the Schrödinger-bridge sde 'sbve' is for kind 'bridge' only)"
            )
        if bridge != (loss == "data_prediction"):
            raise ValueError(
                f"loss_type {loss!r} does not fit a {self.kind!r} model "
                "('data_prediction' is the objective of kind 'bridge' only)"
            )
        if bridge != (method in SB_SAMPLERS):
            raise ValueError(
                f"sampler method {method!r} cannot sample a {self.kind!r} model "
                f"(bridge models use {SB_SAMPLERS}, the others not)"
            )
        if self.kind == "storm" and loss != "score_matching":
            raise ValueError(
                f"a 'storm' model trains with loss_type 'score_matching', not {loss!r}"
            )
        if self.loss_weighting not in LOSS_WEIGHTINGS[loss]:
            raise ValueError(
                f"loss_weighting for {loss!r} must be one of "
                f"{LOSS_WEIGHTINGS[loss]}, got {self.loss_weighting!r}"
            )
        if loss == "denoiser" and (self.c_skip, self.c_out) != ("0", "1"):
            raise ValueError("loss_type 'denoiser' uses neither c_skip nor c_out: keep '0' / '1'")
        if self.predictor_output not in PREDICTOR_OUTPUTS:
            raise ValueError(
                f"predictor_output must be one of {PREDICTOR_OUTPUTS}, "
                f"got {self.predictor_output!r}"
            )
        if self.predictor_output != "estimate" and self.predictor is None:
            raise ValueError("predictor_output applies to a model with a predictor only")
        if not self.l1_weight >= 0:
            raise ValueError(f"l1_weight must be >= 0, got {self.l1_weight!r}")

    def _check_network(self, name: str, net: NCSNppConfig | None, needed: bool) -> None:
        if (net is not None) != needed:
            raise ValueError(f"a {self.kind!r} model {'needs' if needed else 'has no'} {name}")
        if net is None:
            return
        two_conditions = self.kind == "storm" or self.predictor is not None
        channels = {"backbone": 6 if two_conditions else 4, "predictor": 2}[name]
        if net.in_channels != channels or net.out_channels != 2:
            raise ValueError(
                f"{name} of a {self.kind!r} model must map {channels} channels to 2, "
                f"got {net.in_channels} -> {net.out_channels}"
            )
        if net.time_conditional != (name == "backbone"):
            raise ValueError(f"{name}: time_conditional must be {name == 'backbone'}")
        if net.num_freqs != self.spec.num_freqs:
            raise ValueError(
                f"{name}.num_freqs ({net.num_freqs}) must equal the STFT's "
                f"frequency bins ({self.spec.num_freqs})"
            )

    @property
    def modes(self) -> tuple[str, ...]:
        """The inference modes this model can run; the first is its kind's default."""
        if self.kind == "bridge" and self.predictor is not None:
            return BRIDGE_FROM_PREDICTION_MODES
        return MODES[self.kind]

    @property
    def default_mode(self) -> str:
        return self.sampler.mode or self.modes[0]

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "backbone": self.backbone.to_dict() if self.backbone else None,
            "predictor": self.predictor.to_dict() if self.predictor else None,
            "sde": dict(self.sde),
            "spec": self.spec.to_dict(),
            "sampler": dataclasses.asdict(self.sampler),
            **{name: getattr(self, name) for name in _PARAMETRISATION_FIELDS},
            "predictor_output": self.predictor_output,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        d = dict(d)
        if "output_scaling" in d:  # the name of network_scaling in config files before 0.2
            legacy = d.pop("output_scaling")
            if d.setdefault("network_scaling", legacy) != legacy:
                raise ValueError("give network_scaling or (older) output_scaling, not both")
        d = _strict_kwargs(cls, d, "model")
        for name in ("backbone", "predictor"):
            if name in d:
                d[name] = _network_config(d[name])
        d["sde"] = dict(d.get("sde", _default_sde()))
        d["spec"] = SpecConfig.from_dict(d.get("spec", {}))
        d["sampler"] = SamplerConfig.from_dict(d.get("sampler", {}))
        return cls(**d)
