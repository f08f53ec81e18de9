"""Training objectives of the diffusion models, one function (or class) each, per-example losses.

All of them perturb the clean spectrogram x0 with the SDE's marginal,
x_t = μ(x0, y, t) + σ(t)·z, t ~ U[t_eps, T], z ~ CN(0, 1), call the wrapped network once, and
compare (Richter, de Oliveira, Gerkmann 2024, "Investigating training objectives for generative
speech enhancement", Eqs. 7, 8 and 12). ``t`` and ``z`` may be given (tests, reproductions);
otherwise they are drawn from ``generator`` in that order. Shapes: x0, y (B, 1, F, T) complex;
``cond`` the network's conditioning (B, C, F, T); every loss returns (B,).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .tensors import append_dims, complex_randn

LOSS_WEIGHTINGS = {  # loss_type -> the weightings of λ(σ) it accepts (as sgmse 0.1.2)
    "score_matching": ("sigma^2",),
    "denoiser": ("1", "sigma^2", "edm"),
    "data_prediction": ("sigma^2",),  # unused by the data-prediction loss
}


def perturb(model, x0, y, *, t_eps=0.03, generator=None, t=None, z=None, t_end_prob=0.0):
    """(x_t, mean, std (B,), t, z) for a training example; draws t then z when not given.

    ``t_end_prob``: the share of examples put at t = T exactly (drawn after t), where a bridge's
    x_t is its prior, the state every sampler starts from.
    """
    sde = model.sde
    if t is None:
        u = torch.rand(x0.shape[0], generator=generator, device=x0.device)
        t = t_eps + (sde.T - t_eps) * u
        if t_end_prob:
            at_end = torch.rand(x0.shape[0], generator=generator, device=x0.device) < t_end_prob
            t = torch.where(at_end, torch.full_like(t, sde.T), t)
    if z is None:
        z = complex_randn(tuple(x0.shape), generator=generator, device=x0.device)
    mean, std = sde.marginal_prob(x0, y, t)
    return mean + append_dims(std, x0.ndim) * z, mean, std, t, z


def _half_sum(values: torch.Tensor) -> torch.Tensor:
    """½ Σ over everything but the batch axis, (B, ...) -> (B,)."""
    return 0.5 * values.flatten(1).sum(dim=1)


def score_matching_loss(model, x0, y, cond, *, t_eps=0.03, generator=None, t=None, z=None):
    """Denoising score matching (Eq. 7): ½‖σ(t)·s_θ(x_t, cond, t) + z‖².

    ``y`` is the SDE's mean target (y for SGMSE+, Ŷ for StoRM).
    """
    x_t, _, std, t, z = perturb(model, x0, y, t_eps=t_eps, generator=generator, t=t, z=z)
    sigma = append_dims(std, x0.ndim)
    return _half_sum((sigma * model(x_t, cond, t) + z).abs().square())


def denoiser_loss(
    model, x0, y, cond, *, weighting="sigma^2", sigma_data=0.1, t_eps=0.03, generator=None,
    t=None, z=None,
):  # fmt: skip
    """Denoiser loss (Eq. 8): λ(σ)·½‖D_θ(x_t, t) − μ(t)‖² with D_θ = x_t + σ²·s_θ (Eq. 10) and
    λ = 1, σ² or the EDM weight (σ² + σ_data²) / (σ·σ_data)²."""
    x_t, mean, std, t, z = perturb(model, x0, y, t_eps=t_eps, generator=generator, t=t, z=z)
    var = append_dims(std, x0.ndim) ** 2
    denoised = x_t + var * model(x_t, cond, t)
    weight = {
        "1": torch.ones_like(var),
        "sigma^2": var,
        "edm": (var + sigma_data**2) / (var * sigma_data**2),
    }[weighting]
    return _half_sum(weight * (denoised - mean).abs().square())


Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x̂0, x0) -> (B,)


class WaveformTerm:
    """A waveform loss ``fn(pred (B, L), target (B, L)) -> (B,)`` as a term of spectrograms:
    both are synthesised to L = (T − 1)·hop samples first."""

    def __init__(self, spectrogram, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.spectrogram, self.fn = spectrogram, fn

    def __call__(self, x_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        length = (x0.shape[-1] - 1) * self.spectrogram.config.hop_length
        return self.fn(*(self.spectrogram.synthesise(s, length) for s in (x_hat, x0)))


class DataPredictionLoss:
    """Data-prediction loss of the Schrödinger bridge (Jukić et al. 2024; Eq. 12 of Richter et
    al. 2024): ½‖x̂0 − x0‖²/(F·T) + ``l1_weight``·½‖istft(x̂0) − istft(x0)‖₁/L, L = (T − 1)·hop.

    ``extra_terms``: further (weight, term(x̂0, x0) -> (B,)) pairs, e.g. a PESQ loss.
    """

    def __init__(self, spectrogram, l1_weight: float = 0.001, extra_terms: Sequence = ()):
        self.spectrogram = spectrogram
        self.terms = [(1.0, self.spectral_mse), (l1_weight, self.waveform_l1), *extra_terms]

    def spectral_mse(self, x_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return _half_sum((x_hat - x0).abs().square()) / (x0.shape[-2] * x0.shape[-1])

    def waveform_l1(self, x_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        length = (x0.shape[-1] - 1) * self.spectrogram.config.hop_length
        waves = [self.spectrogram.synthesise(s, length) for s in (x_hat, x0)]  # (B, L) each
        return _half_sum((waves[0] - waves[1]).abs()) / length

    def __call__(
        self, model, x0, y, cond, *, t_eps=0.03, generator=None, t=None, z=None, t_end_prob=0.0
    ):  # fmt: skip
        x_t, _, _, t, _ = perturb(
            model, x0, y, t_eps=t_eps, generator=generator, t=t, z=z, t_end_prob=t_end_prob
        )
        x_hat = model(x_t, cond, t)
        return sum(weight * term(x_hat, x0) for weight, term in self.terms if weight)
