"""Tests for audiodiff.sdes: Monte-Carlo checks of the closed forms, and the sgmse reference."""

from __future__ import annotations

import math

import pytest
import torch

from audiodiff.sdes import OUVESDE, SBVESDE, build_sde

N_PATHS = 20_000
N_STEPS = 1_000
CHECK_TIMES = (0.03, 0.1, 0.3, 0.6, 1.0)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Many small tensor ops: on a shared two-core machine one intra-op thread is fastest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _simulate(drift, diffusion, x0, y, t_end, n_steps, generator):
    """Euler-Maruyama paths of dx = drift(x, t) dt + diffusion(t) dw with complex E|dw|^2 = dt.

    Returns {step index: state} at the steps matching CHECK_TIMES (t_end = 1).
    """
    dt = t_end / n_steps
    wanted = {round(t / dt): t for t in CHECK_TIMES}
    x = x0.clone()
    seen = {}
    for i in range(n_steps):
        t = torch.full((1,), i * dt, dtype=torch.float64)
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        x = x + drift(x, y, t) * dt + diffusion(t) * math.sqrt(dt) * z
        if i + 1 in wanted:
            seen[wanted[i + 1]] = x
    return seen


def _std_tolerance(n):
    """Relative tolerance on an empirical std of n complex samples.

    |z|^2 of a circular Gaussian is exponential, so the variance estimate has relative standard
    error 1/sqrt(n) and the std 1/(2 sqrt(n)). Allow 5 SE plus 0.5% for the Euler-Maruyama bias
    (first order in dt = 1e-3 with rates θ + λ ≈ 3.8).
    """
    return 5.0 / (2.0 * math.sqrt(n)) + 5e-3


def test_ouve_marginals_match_monte_carlo():
    sde = OUVESDE()
    gen = torch.Generator().manual_seed(1234)
    x0 = torch.full((N_PATHS,), 0.5 - 0.3j, dtype=torch.complex128)
    y = torch.full((N_PATHS,), -0.2 + 0.7j, dtype=torch.complex128)
    paths = _simulate(sde.drift, sde.diffusion, x0, y, 1.0, N_STEPS, gen)
    for t_val, x in paths.items():
        t = torch.full((1,), t_val, dtype=torch.float64)
        mean, std = sde.marginal_prob(x0[:1], y[:1], t)
        mean, std = mean[0], std[0].item()
        emp_mean = x.mean()
        emp_std = (x - emp_mean).abs().pow(2).mean().sqrt().item()
        # Each real part of the mean has SE std / sqrt(2n); 5 SE plus the O(θ^2 t dt) EM bias.
        mean_tol = 5.0 * std / math.sqrt(2 * N_PATHS) + 1e-3 * abs(0.7 - 1.0j)
        assert abs((emp_mean - mean).real) < mean_tol, (t_val, emp_mean, mean)
        assert abs((emp_mean - mean).imag) < mean_tol, (t_val, emp_mean, mean)
        assert abs(emp_std / std - 1.0) < _std_tolerance(N_PATHS), (t_val, emp_std, std)


def test_sbve_bridge_marginal_matches_conditioned_monte_carlo():
    """Simulate the base SDE dx = g dw from x0 and condition on x_T = y by Gaussian regression.

    (x_t, x_T) are jointly circular Gaussian with mean x0, so x_t | x_T = y has mean
    x0 + β (y - x0), β = E[(x_t - x0) conj(x_T - x0)] / E|x_T - x0|^2, and variance E|residual|^2.
    """
    sde = SBVESDE()
    gen = torch.Generator().manual_seed(99)
    x0 = torch.full((N_PATHS,), 0.4 + 0.1j, dtype=torch.complex128)
    y = torch.full((N_PATHS,), -0.6 + 0.5j, dtype=torch.complex128)
    paths = _simulate(sde.drift, sde.diffusion, x0, y, 1.0, N_STEPS, gen)
    u_end = paths[1.0] - x0
    for t_val in (0.1, 0.3, 0.6):
        u = paths[t_val] - x0
        beta = (u * u_end.conj()).mean() / u_end.abs().pow(2).mean()
        resid = u - beta * u_end
        resid_var = resid.abs().pow(2).mean()
        t = torch.full((1,), t_val, dtype=torch.float64)
        mean, std = sde.marginal_prob(x0[:1], y[:1], t)
        cond_mean = x0[0] + beta * (y[0] - x0[0])
        # E|β̂ - β|^2 ≈ Var(resid) / (n Var(x_T)); 5 SE on |y - x0| plus 0.2% Riemann bias.
        beta_se = math.sqrt(resid_var / (N_PATHS * u_end.abs().pow(2).mean()))
        gap = abs(y[0] - x0[0])
        assert abs(cond_mean - mean[0]) < 5.0 * beta_se * gap + 2e-3 * gap, t_val
        assert abs(resid_var.sqrt().item() / std[0].item() - 1.0) < _std_tolerance(N_PATHS)


def test_variance_derivatives_follow_the_sdes():
    """Closed-form variances solve their moment ODEs: OU dσ²/dt = -2θσ² + g², VE dσ_t²/dt = g²."""
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-5
    ou = OUVESDE(theta=2.0, sigma_min=0.1, sigma_max=0.7)
    d_var = (ou.marginal_std(t + h) ** 2 - ou.marginal_std(t - h) ** 2) / (2 * h)
    expected = -2.0 * ou.theta * ou.marginal_std(t) ** 2 + ou.diffusion(t) ** 2
    torch.testing.assert_close(d_var, expected, rtol=1e-6, atol=1e-9)
    sb = SBVESDE(k=3.0, c=0.3)
    d_var = (sb.sigma_t(t + h) ** 2 - sb.sigma_t(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(d_var, sb.diffusion(t) ** 2, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(
        sb.sigma_t(t) ** 2 + sb.sigma_bar_t(t) ** 2, torch.full_like(t, sb.sigma_T**2)
    )


def test_sbve_boundaries():
    sde = SBVESDE()
    x0 = torch.randn(3, 1, 4, 5, dtype=torch.complex64)
    y = torch.randn(3, 1, 4, 5, dtype=torch.complex64)
    zeros, ends = torch.zeros(3), torch.full((3,), sde.T)
    torch.testing.assert_close(sde.marginal_mean(x0, y, zeros), x0)
    torch.testing.assert_close(sde.marginal_mean(x0, y, ends), y)
    assert torch.all(sde.marginal_std(zeros) == 0) and torch.all(sde.marginal_std(ends) == 0)
    assert torch.equal(sde.prior_sample(y), y)


def test_ouve_matches_reference():
    from sgmse.sdes import OUVESDE as RefOUVESDE

    ours = OUVESDE(theta=1.5, sigma_min=0.05, sigma_max=0.5)
    ref = RefOUVESDE(theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30)
    t = torch.linspace(0.0, 1.0, 11)
    x0 = torch.randn(11, 1, 6, 7, dtype=torch.complex64)
    y = torch.randn(11, 1, 6, 7, dtype=torch.complex64)
    ref_mean, ref_std = ref.marginal_prob(x0, y, t)
    mean, std = ours.marginal_prob(x0, y, t)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(std, ref_std, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.diffusion(t), ref.sde(x0, y, t)[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.drift(x0, y, t), ref.sde(x0, y, t)[0])
    # Same noise stream: the reference draws from the global generator with randn_like(y).
    torch.manual_seed(7)
    ref_prior = ref.prior_sampling(y.shape, y)
    prior = ours.prior_sample(y, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(prior, ref_prior, rtol=1e-5, atol=1e-6)


def test_sbve_matches_reference():
    from sgmse.sdes import SBVESDE as RefSBVESDE

    ours, ref = SBVESDE(k=2.6, c=0.4), RefSBVESDE(k=2.6, c=0.4, N=50)
    t = torch.linspace(0.0, 1.0, 11)
    x0 = torch.randn(11, 1, 6, 7, dtype=torch.complex64)
    y = torch.randn(11, 1, 6, 7, dtype=torch.complex64)
    ref_mean, ref_std = ref.marginal_prob(x0, y, t)
    mean, std = ours.marginal_prob(x0, y, t)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-5, atol=1e-5)
    # The reference adds eps = 1e-8 under the square root of σ̄², so its std at t = T is 1e-4.
    torch.testing.assert_close(std, ref_std, rtol=1e-5, atol=2e-4)
    torch.testing.assert_close(ours.diffusion(t), ref.sde(x0, y, t)[1])


def test_configs_round_trip_and_validate():
    for sde in (OUVESDE(theta=2.0, sigma_min=0.1, sigma_max=0.4), SBVESDE(k=3.0, c=0.2)):
        d = sde.to_dict()
        assert d["name"] == sde.name
        assert build_sde(d) == sde and type(sde).from_dict(d) == sde
    assert build_sde({"name": "ouve"}) == OUVESDE()
    with pytest.raises(ValueError, match="unknown"):
        build_sde({"name": "ouve", "N": 30})
    with pytest.raises(ValueError, match="unknown SDE name"):
        build_sde({"name": "vp"})
    with pytest.raises(ValueError, match="name"):
        OUVESDE.from_dict({"name": "sbve"})
    bad = [
        {"sigma_min": 0.0},
        {"sigma_max": 0.01},
        {"theta": -1.0},
        {"T": 0.0},
        {"theta": float("nan")},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            OUVESDE(**kwargs)
    with pytest.raises(TypeError):
        OUVESDE(theta="1.5")
    for kwargs in ({"k": 1.0}, {"c": 0.0}, {"k": -2.0}):
        with pytest.raises(ValueError):
            SBVESDE(**kwargs)
