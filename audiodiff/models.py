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
