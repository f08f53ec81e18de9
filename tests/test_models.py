import torch
from torch import nn

from audiodiff.models import (
    Parametrisation,
    ScoreModel,
    channels_to_complex,
    complex_to_channels,
    score_matching_loss,
)
from audiodiff.sdes import OUVESDE


class LinearBackbone(nn.Module):
    """A 1x1 conv that applies out_scale before its biased projection, like NCSN++'s last layer."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, 2, 1)
        self.seen = None

    def forward(self, x, t, out_scale=None):
        self.seen = (x, t, out_scale)
        return self.proj(x * out_scale[:, None, None, None])


def test_complex_channel_layout_matches_reference_order():
    z = torch.randn(2, 3, 4, 5, dtype=torch.complex64)
    h = complex_to_channels(z)
    assert h.shape == (2, 6, 4, 5)
    assert torch.equal(h[:, 0], z[:, 0].real) and torch.equal(h[:, 1], z[:, 0].imag)
    assert torch.equal(h[:, 4], z[:, 2].real) and torch.equal(h[:, 5], z[:, 2].imag)
    assert torch.equal(channels_to_complex(h), z)


def test_score_is_negated_network_output_with_1_over_t_scaling():
    sde = OUVESDE()
    backbone = LinearBackbone(4)
    model = ScoreModel(backbone, sde)
    x = torch.randn(2, 1, 8, 4, dtype=torch.complex64)
    y = torch.randn(2, 1, 8, 4, dtype=torch.complex64)
    t = torch.tensor([0.5, 0.25])
    score = model(x, y, t)
    net_in, seen_t, scale = backbone.seen
    assert torch.equal(net_in[:, 2], y[:, 0].real) and torch.equal(seen_t, t)
    assert torch.allclose(scale, 1 / t)
    expected = -channels_to_complex(backbone.proj(net_in * (1 / t)[:, None, None, None]))
    assert torch.allclose(score, expected)
    sigma_model = ScoreModel(backbone, sde, Parametrisation(network_scaling="1/sigma"))
    sigma_model(x, y, t)
    assert torch.allclose(backbone.seen[2], 1 / sde.marginal_std(t))


def test_loss_is_per_example_and_zero_for_the_exact_score():
    sde = OUVESDE()

    class ExactScore(nn.Module):
        # x0 is a point mass, so the true score of x_t is -(x_t - mean)/std^2
        def __init__(self, x0, y):
            super().__init__()
            self.sde, self.x0, self.y = sde, x0, y

        def forward(self, x_t, cond, t):
            mean, std = sde.marginal_prob(self.x0, self.y, t)
            return -(x_t - mean) / std[:, None, None, None] ** 2

    x0 = torch.randn(3, 1, 8, 4, dtype=torch.complex64)
    y = torch.randn(3, 1, 8, 4, dtype=torch.complex64)
    exact = score_matching_loss(
        ExactScore(x0, y), x0, y, y, generator=torch.Generator().manual_seed(0)
    )
    assert exact.shape == (3,) and exact.abs().max() < 1e-8
    zero = ScoreModel(LinearBackbone(4), sde)
    nn.init.zeros_(zero.backbone.proj.weight), nn.init.zeros_(zero.backbone.proj.bias)
    loss = score_matching_loss(zero, x0, y, y, generator=torch.Generator().manual_seed(0))
    # a zero score leaves ½‖z‖² with E‖z‖² = 32 elements
    assert 8 < loss.mean() < 24
