"""The one network wrapper: backbone -> score s_θ(x_t, y, t) or clean estimate x̂0.

Richter et al. 2023, Eq. (7)-(9) and Richter, de Oliveira, Gerkmann 2024 ("Investigating training
objectives"), Eqs. (7)-(12): the network sees the current state x_t and the conditioning
spectrogram(s) stacked as real/imaginary channels, with named coefficients around it::

    F = DNN(c_in(t)·[x_t, y], t) · s(t)          s = 1/t, 1/σ(t) or 1 (``network_scaling``)
    score_matching:  s_θ = c_skip(t)·x_t + c_out(t)·F
    denoiser:        s_θ = (F − x_t) / σ(t)²      (F is the denoised estimate D_θ)
    data_prediction: x̂0  = c_skip(t)·x_t + c_out(t)·F

The SGMSE+ network of 2023 (sgmse ``ncsnpp``, ``ncsnpp_48k``) is score_matching with s = 1/t and
c_out = −1 (its forward returns −DNN); where the backbone applies s (to the features entering its
last 1×1 projection, or after it) is a backbone setting (``NCSNppConfig.out_scale_at``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .losses import score_matching_loss
from .tensors import append_dims

LOSS_TYPES = ("score_matching", "denoiser", "data_prediction")
NETWORK_SCALINGS = (None, "1/t", "1/sigma")
C_IN = ("1", "edm")
C_SKIP = ("0", "edm")
C_OUT = ("1", "-1", "sigma", "1/sigma", "edm")  # "-1": the 2023 SGMSE+ sign convention
__all__ = [
    "LOSS_TYPES",
    "PREDICTOR_OUTPUTS",
    "Parametrisation",
    "ScoreModel",
    "score_matching_loss",
]


def complex_to_channels(z: torch.Tensor) -> torch.Tensor:
    """(B, C, F, T) complex -> (B, 2C, F, T) real as [re_0, im_0, re_1, im_1, ...]."""
    batch, channels, freqs, frames = z.shape
    parts = torch.view_as_real(z)  # (B, C, F, T, 2)
    parts = parts.permute(0, 1, 4, 2, 3)  # (B, C, 2, F, T)
    return parts.reshape(batch, 2 * channels, freqs, frames)  # (B, 2C, F, T)


def channels_to_complex(h: torch.Tensor) -> torch.Tensor:
    """(B, 2C, F, T) real as [re_0, im_0, ...] -> (B, C, F, T) complex."""
    batch, double, freqs, frames = h.shape
    parts = h.reshape(batch, double // 2, 2, freqs, frames)  # (B, C, 2, F, T)
    parts = parts.permute(0, 1, 3, 4, 2).contiguous()  # (B, C, F, T, 2)
    return torch.view_as_complex(parts.float())  # (B, C, F, T)


@dataclass(frozen=True)
class Parametrisation:
    """What the wrapper returns and the coefficients around the backbone (choices as sgmse
    0.1.2's ``ScoreModel``; the defaults are the 2023 SGMSE+ network)."""

    loss_type: str = "score_matching"
    network_scaling: str | None = "1/t"
    c_in: str = "1"
    c_skip: str = "0"
    c_out: str = "-1"
    sigma_data: float = 0.1

    def __post_init__(self) -> None:
        for name, choices in (
            ("loss_type", LOSS_TYPES),
            ("network_scaling", NETWORK_SCALINGS),
            ("c_in", C_IN),
            ("c_skip", C_SKIP),
            ("c_out", C_OUT),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not self.sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {self.sigma_data!r}")


class ScoreModel(nn.Module):
    """s_θ(x_t, cond, t) (or x̂0) for a time-conditional backbone with 2·(1 + C_cond) inputs.

    ``cond``: conditioning spectrogram(s), (B, C_cond, F, T) complex: y (SGMSE+, bridge), [y, Ŷ]
    (StoRM). See the module docstring for the formulas.
    """

    def __init__(self, backbone: nn.Module, sde, param: Parametrisation | None = None):
        super().__init__()
        self.backbone = backbone
        self.sde = sde
        self.param = param if param is not None else Parametrisation()

    def network_scale(self, t: torch.Tensor) -> torch.Tensor | None:
        """s(t), (B,), applied by the backbone; None for no scaling."""
        scaling = self.param.network_scaling
        if scaling is None:
            return None
        return 1.0 / (t if scaling == "1/t" else self.sde.marginal_std(t))

    def c_in(self, t: torch.Tensor) -> torch.Tensor:
        """(B,): 1, or 1/sqrt(σ² + σ_data²) (EDM)."""
        if self.param.c_in == "1":
            return torch.ones_like(t)
        return torch.rsqrt(self.sde.marginal_std(t) ** 2 + self.param.sigma_data**2)

    def c_skip(self, t: torch.Tensor) -> torch.Tensor:
        """(B,): 0, or σ_data² / (σ² + σ_data²) (EDM)."""
        if self.param.c_skip == "0":
            return torch.zeros_like(t)
        return self.param.sigma_data**2 / (self.sde.marginal_std(t) ** 2 + self.param.sigma_data**2)

    def c_out(self, t: torch.Tensor) -> torch.Tensor:
        """(B,): ±1, σ, 1/σ, or σ·σ_data / sqrt(σ² + σ_data²) (EDM)."""
        name, sigma_data = self.param.c_out, self.param.sigma_data
        if name in ("1", "-1"):
            return torch.full_like(t, float(name))
        sigma = self.sde.marginal_std(t)
        if name == "edm":
            return sigma * sigma_data * torch.rsqrt(sigma**2 + sigma_data**2)
        return sigma if name == "sigma" else 1.0 / sigma

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t: (B, 1, F, T) complex, cond: (B, C_cond, F, T), t: (B,) -> (B, 1, F, T)."""
        net_in = complex_to_channels(torch.cat([x_t, cond], dim=1))  # (B, 2(1 + C_cond), F, T)
        if self.param.c_in != "1":
            net_in = net_in * append_dims(self.c_in(t), net_in.ndim)
        out = self.backbone(net_in, t, out_scale=self.network_scale(t))  # (B, 2, F, T)
        return self.combine(x_t, channels_to_complex(out), t)

    def combine(self, x_t: torch.Tensor, f: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The wrapper's output from the (scaled) network output F, both (B, 1, F, T)."""
        if self.param.loss_type == "denoiser":
            return (f - x_t) / append_dims(self.sde.marginal_std(t), f.ndim) ** 2
        if self.param.c_out == "-1" and self.param.c_skip == "0":
            return -f  # the 2023 SGMSE+ network, exactly as before
        out = append_dims(self.c_out(t), f.ndim) * f
        if self.param.c_skip != "0":
            out = out + append_dims(self.c_skip(t), f.ndim) * x_t
        return out


PREDICTOR_OUTPUTS = ("estimate", "mask")


class PredictiveModel(nn.Module):
    """Ŷ from one pass of a backbone without time input (the StoRM predictive stage).

    ``output`` says what the backbone's output F is: ``estimate``, Ŷ = F (StoRM), or ``mask``, a
    complex ratio mask around the identity, Ŷ = y·(1 + F) (Williamson et al. 2016), so that a
    network whose output is still zero passes the mixture through.
    """

    def __init__(self, backbone: nn.Module, output: str = "estimate"):
        super().__init__()
        if output not in PREDICTOR_OUTPUTS:
            raise ValueError(f"predictor output must be one of {PREDICTOR_OUTPUTS}, got {output!r}")
        self.backbone = backbone
        self.output = output

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (B, 1, F, T) complex -> Ŷ: (B, 1, F, T) complex."""
        return self.estimate(y, channels_to_complex(self.backbone(complex_to_channels(y))))

    def estimate(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Ŷ from the input y and the backbone's output F, both (B, 1, F, T) complex."""
        return f if self.output == "estimate" else y * (1 + f)


class StoRM(nn.Module):
    """Stochastic regeneration (Lemercier et al. 2023): a predictive model, then a score model.

    The diffusion runs the same SDE with Ŷ as its mean target, from x_T = Ŷ + σ(T)·z, and the score
    network is conditioned on [y, Ŷ]. ``score`` is an ordinary :class:`ScoreModel`.
    """

    def __init__(self, predictor: PredictiveModel, score: ScoreModel):
        super().__init__()
        self.predictor = predictor
        self.score = score

    @property
    def sde(self):
        return self.score.sde

    @staticmethod
    def condition(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """Score-network conditioning [y, Ŷ], (B, 2, F, T)."""
        return torch.cat([y, y_hat], dim=1)


def predictive_mse_loss(y_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """½‖Ŷ − x‖² per example (B,), the StoRM predictive loss."""
    return 0.5 * (y_hat - x0).abs().square().flatten(1).sum(dim=1)


def storm_loss(
    model: StoRM,
    x0: torch.Tensor,
    y: torch.Tensor,
    *,
    alpha: float = 0.5,
    predictive_loss=predictive_mse_loss,
    score_task_prob: float = 0.0,
    t_eps: float = 0.03,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """α·L_pred(Ŷ, x) + (1 − α)·DSM with mean target and conditioning Ŷ, per example (B,).

    Joint training lets the score loss reach the predictor too, as in StoRM; freeze the predictor's
    parameters for the frozen variant. With probability ``score_task_prob`` an example is trained
    as plain SGMSE+ instead (Ŷ replaced by y), so the same network also serves the ``score`` mode.
    """
    y_hat = model.predictor(y)
    use_y = torch.rand(y.shape[0], generator=generator, device=y.device) < score_task_prob
    target = torch.where(append_dims(use_y, y.ndim), y, y_hat)
    dsm = score_matching_loss(
        model.score, x0, target, StoRM.condition(y, target), t_eps=t_eps, generator=generator
    )
    return alpha * predictive_loss(y_hat, x0) + (1 - alpha) * dsm


class PredictiveLoss:
    """mse_weight·½‖Ŷ − x‖² + spectral_weight·(DDSP multi-scale spectral loss on the waveforms).

    The spectral term (Engel et al. 2020) compares iSTFTs of Ŷ and x; per example (B,).
    """

    def __init__(self, spectrogram, mse_weight: float = 1.0, spectral_weight: float = 0.0):
        if mse_weight < 0 or spectral_weight < 0 or mse_weight + spectral_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        self.spectrogram = spectrogram
        self.mse_weight = mse_weight
        self.spectral_weight = spectral_weight

    def __call__(self, y_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        loss = self.mse_weight * predictive_mse_loss(y_hat, x0) if self.mse_weight else 0.0
        if self.spectral_weight:
            from .ddsp import multiscale_spectral_loss

            length = (y_hat.shape[-1] - 1) * self.spectrogram.config.hop_length
            waves = [self.spectrogram.synthesise(s, length) for s in (y_hat, x0)]  # (B, L) each
            loss = loss + self.spectral_weight * multiscale_spectral_loss(*waves)
        return loss
