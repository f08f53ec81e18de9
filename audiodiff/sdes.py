"""Forward SDEs used by SGMSE+, StoRM and the Schrödinger-bridge model: the maths only.

Every quantity lives on complex spectrograms x of shape (B, ...) and per-example times t of shape
(B,). Noise is circular complex Gaussian with E|dw|^2 = dt, so a "std" below is the square root of
E|x - mean|^2, and the score of CN(mu, s^2) is -(x - mu) / s^2 (the SGMSE+ convention).

Samplers live in :mod:`audiodiff.sampling`; these classes only hold floats and evaluate formulas.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import torch

from audiodiff.tensors import append_dims, complex_randn


def _check_fields(obj: Any) -> None:
    """Coerce every dataclass field to a finite Python float; raise naming the bad field."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{type(obj).__name__}.{f.name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{type(obj).__name__}.{f.name} must be finite, got {value!r}")
        object.__setattr__(obj, f.name, float(value))


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    """Shared ``from_dict``: accept the class's own ``name`` and its fields, nothing else."""
    params = dict(d)
    name = params.pop("name", cls.name)
    if name != cls.name:
        raise ValueError(f"{cls.__name__}.from_dict got name {name!r}, expected {cls.name!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} parameter(s) {unknown}; known: {sorted(known)}")
    return cls(**params)


@dataclass(frozen=True)
class OUVESDE:
    r"""Ornstein-Uhlenbeck SDE with variance-exploding diffusion (SGMSE+, Richter et al. 2023).

    Forward process from clean speech x0 towards the noisy mixture y::

        dx = θ (y - x) dt + g(t) dw,   g(t) = σ_min (σ_max/σ_min)^t sqrt(2λ),   λ = ln(σ_max/σ_min)

    which is Eq. (5) of Song et al. 2021 with the SGMSE+ drift f(x, y) = θ (y - x).

    Marginal (perturbation kernel) x_t | x0, y ~ CN(μ(t), σ(t)^2):

    * mean: u = x - y obeys du = -θ u dt + g dw, so E[u_t] = e^{-θt} u_0, i.e.
      μ(t) = e^{-θt} x0 + (1 - e^{-θt}) y.
    * variance: σ(t)^2 = ∫_0^t e^{-2θ(t-s)} g(s)^2 ds
      = 2λ σ_min^2 e^{-2θt} ∫_0^t e^{2(θ+λ)s} ds
      = λ σ_min^2 / (θ + λ) · (e^{2λt} - e^{-2θt}).

    Note σ(0) = 0: σ_min is the scale of g, not the std at t = 0. The prior is CN(y, σ(T)^2).
    Reverse SDE (Song et al. 2021, Eq. 6): dx = [f - g^2 score] dt + g dw̄; probability-flow ODE
    (Eq. 13): dx = [f - ½ g^2 score] dt.
    """

    theta: float = 1.5
    sigma_min: float = 0.05
    sigma_max: float = 0.5
    T: float = 1.0

    name: ClassVar[str] = "ouve"

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.theta < 0:
            raise ValueError(f"OUVESDE.theta must be >= 0, got {self.theta}")
        if self.sigma_min <= 0:
            raise ValueError(f"OUVESDE.sigma_min must be > 0, got {self.sigma_min}")
        if self.sigma_max <= self.sigma_min:
            raise ValueError(
                f"OUVESDE needs sigma_max > sigma_min, got {self.sigma_max} <= {self.sigma_min}"
            )
        if self.T <= 0:
            raise ValueError(f"OUVESDE.T must be > 0, got {self.T}")

    @property
    def log_ratio(self) -> float:
        """λ = ln(σ_max / σ_min)."""
        return math.log(self.sigma_max / self.sigma_min)

    def drift(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f(x, y) = θ (y - x); time-homogeneous, ``t`` is accepted for a uniform signature."""
        return self.theta * (y - x)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) = σ_min e^{λt} sqrt(2λ), shape (B,)."""
        lam = self.log_ratio
        return self.sigma_min * math.sqrt(2.0 * lam) * torch.exp(lam * t)

    def marginal_mean(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """μ(t) = e^{-θt} x0 + (1 - e^{-θt}) y."""
        decay = append_dims(torch.exp(-self.theta * t), x0.ndim)
        return y + decay * (x0 - y)

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        """σ(t) = sqrt(λ σ_min^2 / (θ+λ) · e^{-2θt} (e^{2(θ+λ)t} - 1)), shape (B,)."""
        lam = self.log_ratio
        rate = self.theta + lam
        var = (lam * self.sigma_min**2 / rate) * torch.exp(-2.0 * self.theta * t)
        return torch.sqrt(var * torch.expm1(2.0 * rate * t))

    def marginal_prob(
        self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ(t), σ(t)) of the perturbation kernel."""
        return self.marginal_mean(x0, y, t), self.marginal_std(t)

    def prior_sample(
        self, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x_T = y + σ(T) z with z ~ CN(0, 1), on y's device and dtype."""
        t_end = torch.full((y.shape[0],), self.T, dtype=y.real.dtype, device=y.device)
        z = complex_randn(tuple(y.shape), generator=generator, device=y.device, dtype=y.dtype)
        return y + append_dims(self.marginal_std(t_end), y.ndim) * z

    def reverse_drift(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, score: torch.Tensor
    ) -> torch.Tensor:
        """Drift of the reverse SDE: f - g^2 score (Song et al. 2021, Eq. 6)."""
        g2 = append_dims(self.diffusion(t) ** 2, x.ndim)
        return self.drift(x, y, t) - g2 * score

    def probability_flow_drift(
        self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, score: torch.Tensor
    ) -> torch.Tensor:
        """Drift of the probability-flow ODE: f - ½ g^2 score (Song et al. 2021, Eq. 13)."""
        g2 = append_dims(self.diffusion(t) ** 2, x.ndim)
        return self.drift(x, y, t) - 0.5 * g2 * score

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OUVESDE:
        return _from_dict(cls, d)


@dataclass(frozen=True)
class SBVESDE:
    r"""Schrödinger bridge with variance-exploding base SDE (Jukić et al. 2024).

    Base SDE (Jukić et al. 2024, Table 1, "SB-VE")::

        dx = g(t) dw,    g(t) = sqrt(c) k^t,    f = 0

    whose variance from a fixed start is σ_t^2 = ∫_0^t c k^{2s} ds = c (k^{2t} - 1) / (2 ln k).
    The bridge is this process pinned at x_0 = x0 and x_T = y. For a process with independent
    Gaussian increments, conditioning on the end point gives (Eqs. 9 and 11 there, with α ≡ 1)::

        x_t | x0, y ~ CN(μ_t, s_t^2),  μ_t = (σ̄_t^2 x0 + σ_t^2 y) / σ_T^2,  s_t = σ_t σ̄_t / σ_T,

    where σ̄_t^2 = σ_T^2 - σ_t^2 is the variance still to come. So μ(0) = x0, μ(T) = y and
    s(0) = s(T) = 0: the prior is the point mass at y.
    """

    k: float = 2.6
    c: float = 0.4
    T: float = 1.0

    name: ClassVar[str] = "sbve"

    def __post_init__(self) -> None:
        _check_fields(self)
        if self.k <= 0 or self.k == 1.0:
            raise ValueError(f"SBVESDE.k must be > 0 and != 1, got {self.k}")
        if self.c <= 0:
            raise ValueError(f"SBVESDE.c must be > 0, got {self.c}")
        if self.T <= 0:
            raise ValueError(f"SBVESDE.T must be > 0, got {self.T}")

    def drift(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """f = 0."""
        return torch.zeros_like(x)

    def diffusion(self, t: torch.Tensor) -> torch.Tensor:
        """g(t) = sqrt(c) k^t, shape (B,)."""
        return math.sqrt(self.c) * torch.exp(math.log(self.k) * t)

    def _variance_between(self, t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
        """∫_{t_from}^{t_to} g(s)^2 ds = c k^{2 t_from} (k^{2(t_to - t_from)} - 1) / (2 ln k)."""
        log_k = math.log(self.k)
        grown = torch.exp(2.0 * log_k * t_from) * torch.expm1(2.0 * log_k * (t_to - t_from))
        return self.c / (2.0 * log_k) * grown

    @property
    def sigma_T(self) -> float:
        """σ_T, the base process's std at the end time."""
        log_k = math.log(self.k)
        return math.sqrt(self.c * math.expm1(2.0 * log_k * self.T) / (2.0 * log_k))

    def sigma_t(self, t: torch.Tensor) -> torch.Tensor:
        """σ_t = sqrt(c (k^{2t} - 1) / (2 ln k)), the base variance accumulated on [0, t]."""
        return torch.sqrt(self._variance_between(torch.zeros_like(t), t).clamp_min(0.0))

    def sigma_bar_t(self, t: torch.Tensor) -> torch.Tensor:
        """σ̄_t = sqrt(σ_T^2 - σ_t^2), the base variance still to come on [t, T]."""
        ahead = self._variance_between(t, torch.full_like(t, self.T))
        return torch.sqrt(ahead.clamp_min(0.0))

    def marginal_mean(self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """μ_t = (σ̄_t^2 x0 + σ_t^2 y) / σ_T^2."""
        w_y = append_dims(self.sigma_t(t) ** 2 / self.sigma_T**2, x0.ndim)
        return x0 + w_y * (y - x0)

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        """s_t = σ_t σ̄_t / σ_T, shape (B,)."""
        return self.sigma_t(t) * self.sigma_bar_t(t) / self.sigma_T

    def marginal_prob(
        self, x0: torch.Tensor, y: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ_t, s_t) of the bridge marginal."""
        return self.marginal_mean(x0, y, t), self.marginal_std(t)

    def prior_sample(
        self, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x_T = y: the bridge's prior is a point mass, so ``generator`` is unused."""
        return y.clone()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SBVESDE:
        return _from_dict(cls, d)


SDE_CLASSES: dict[str, type] = {cls.name: cls for cls in (OUVESDE, SBVESDE)}


def build_sde(d: dict[str, Any]) -> OUVESDE | SBVESDE:
    """Rebuild an SDE from ``to_dict()`` output, e.g. ``{"name": "ouve", "theta": 1.5}``."""
    if "name" not in d:
        raise ValueError(f"SDE config needs a 'name' (one of {sorted(SDE_CLASSES)}), got {d!r}")
    cls = SDE_CLASSES.get(d["name"])
    if cls is None:
        raise ValueError(f"unknown SDE name {d['name']!r}; known: {sorted(SDE_CLASSES)}")
    return cls.from_dict(d)
