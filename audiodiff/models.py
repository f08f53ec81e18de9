"""Score model: the one wrapper that turns a backbone into the score s_θ(x_t, y, t) of SGMSE+.

Richter et al. 2023, Eq. (7)-(9): the network sees the current state x_t and the conditioning
spectrogram(s) stacked as real/imaginary channels, and the score is

    s_θ(x_t, y, t) = −c_out(t) · DNN([x_t, y], t),

where the reference scales the features entering the last 1×1 projection by c_out(t) = 1/t (its
``scale_by_sigma`` applied to time_cond = t). ``output_scaling="1/sigma"`` uses 1/σ(t) instead.
"""

from __future__ import annotations

import torch
from torch import nn

from .tensors import append_dims, complex_randn

OUTPUT_SCALINGS = ("1/t", "1/sigma")


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


class ScoreModel(nn.Module):
    """s_θ(x_t, cond, t) for a time-conditional backbone with 2·(1 + C_cond) input channels.

    ``cond``: conditioning spectrogram(s), (B, C_cond, F, T) complex: y (SGMSE+), [y, Ŷ] (StoRM).
    """

    def __init__(self, backbone: nn.Module, sde, output_scaling: str = "1/t"):
        super().__init__()
        if output_scaling not in OUTPUT_SCALINGS:
            raise ValueError(
                f"output_scaling must be one of {OUTPUT_SCALINGS}, got {output_scaling!r}"
            )
        self.backbone = backbone
        self.sde = sde
        self.output_scaling = output_scaling

    def c_out(self, t: torch.Tensor) -> torch.Tensor:
        """Per-example output scale, (B,)."""
        return 1.0 / (t if self.output_scaling == "1/t" else self.sde.marginal_std(t))

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t: (B, 1, F, T) complex, cond: (B, C_cond, F, T), t: (B,) -> score (B, 1, F, T)."""
        net_in = complex_to_channels(torch.cat([x_t, cond], dim=1))  # (B, 2(1 + C_cond), F, T)
        out = self.backbone(net_in, t, out_scale=self.c_out(t))  # (B, 2, F, T)
        return -channels_to_complex(out)


def score_matching_loss(
    model: ScoreModel,
    x0: torch.Tensor,
    y: torch.Tensor,
    cond: torch.Tensor,
    *,
    t_eps: float = 0.03,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoising score matching (Richter et al. 2023, Eq. 7): ½‖σ(t)·s_θ(x_t, cond, t) + z‖².

    Returns per-example losses (B,).

    x0: clean (B, 1, F, T); y: the SDE's mean target (y for SGMSE+, Ŷ for StoRM); t ~ U[t_eps, T].
    """
    sde = model.sde
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device)
    t = t_eps + (sde.T - t_eps) * u
    mean, std = sde.marginal_prob(x0, y, t)
    z = complex_randn(tuple(x0.shape), generator=generator, device=x0.device)
    sigma = append_dims(std, x0.ndim)
    score = model(mean + sigma * z, cond, t)
    return 0.5 * (sigma * score + z).abs().square().flatten(1).sum(dim=1)


class PredictiveModel(nn.Module):
    """Ŷ = DNN(y): one pass of a backbone without time input (the StoRM predictive stage)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y: (B, 1, F, T) complex -> Ŷ: (B, 1, F, T) complex."""
        return channels_to_complex(self.backbone(complex_to_channels(y)))


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
