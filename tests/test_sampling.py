"""Tests for audiodiff.sampling with Gaussian data, where every score is known in closed form.

Clean data per element: x0 ~ CN(m0, v0), y fixed. Under the OUVE SDE x_t ~ CN(μ_t, s_t^2) with
μ_t = e^{-θt} m0 + (1 - e^{-θt}) y and s_t^2 = e^{-2θt} v0 + σ(t)^2, so the exact score is
-(x - μ_t) / s_t^2, elementwise (hence per frame).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audiodiff.sampling import (
    annealed_langevin_step,
    euler_maruyama_step,
    reverse_diffusion_step,
    sample_ode_euler,
    sample_ode_heun,
    sample_pc,
    sample_sb,
    time_grid,
)
from audiodiff.sdes import OUVESDE, SBVESDE
from audiodiff.tensors import append_dims

M0, V0, Y0 = 0.3 + 0.2j, 0.04, 0.8 - 0.5j
SHAPE = (4, 1, 100, 100)  # 40 000 independent elements
N_ELEM = math.prod(SHAPE)
OU = OUVESDE()
SB = SBVESDE()


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Many small tensor ops: on a shared two-core machine one intra-op thread is fastest."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_score(sde: OUVESDE, factor: float = 1.0):
    """Exact score of the OUVE marginal of CN(M0, V0) data, optionally scaled (to break it)."""

    def score_fn(x, y, t):
        decay = append_dims(torch.exp(-sde.theta * t), x.ndim)
        var = decay**2 * V0 + append_dims(sde.marginal_std(t), x.ndim) ** 2
        return -factor * (x - (decay * M0 + (1 - decay) * y)) / var

    return score_fn


def ou_marginal(t: float) -> tuple[complex, float]:
    tt = torch.tensor([t], dtype=torch.float64)
    decay = math.exp(-OU.theta * t)
    return decay * M0 + (1 - decay) * Y0, decay**2 * V0 + OU.marginal_std(tt).item() ** 2


def ou_target(t_last: float) -> tuple[complex, float]:
    """Law of the final noise-free reverse step from t_N to 0 applied to the exact x_{t_N}.

    That step is affine, x ↦ a x + b with a = 1 + θ dt - g^2 dt / s^2 and
    b = -θ dt y + g^2 dt μ / s^2 (dt = t_N), so CN(μ, s^2) ↦ CN(a μ + b, a^2 s^2).
    """
    mean, var = ou_marginal(t_last)
    g2 = OU.diffusion(torch.tensor([t_last], dtype=torch.float64)).item() ** 2
    a = 1 + OU.theta * t_last - g2 * t_last / var
    b = -OU.theta * t_last * Y0 + g2 * t_last * mean / var
    return a * mean + b, a * a * var


def matches(x, mean, var, *, mean_allow, var_allow) -> bool:
    """Empirical mean/variance of n complex samples agree with (mean, var).

    Statistical part: 5 standard errors (a real part of the mean has SE sd / sqrt(2n); the
    variance of a circular Gaussian has relative SE 1/sqrt(n)). Discretisation part: mean_allow
    standard deviations on the mean and var_allow relative on the variance.
    """
    n, sd = x.numel(), math.sqrt(var)
    emp_mean = x.mean().item()
    emp_var = (x - emp_mean).abs().pow(2).mean().item()
    mean_tol = 5 * sd / math.sqrt(2 * n) + mean_allow * sd
    ok_mean = abs((emp_mean - mean).real) < mean_tol and abs((emp_mean - mean).imag) < mean_tol
    return ok_mean and abs(emp_var / var - 1) < 5 / math.sqrt(n) + var_allow


def exact_start(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """y and x_T drawn from the exact marginal at T (not the SGMSE+ prior CN(y, σ(T)^2))."""
    y = torch.full(SHAPE, Y0, dtype=torch.complex64)
    mean, var = ou_marginal(OU.T)
    z = torch.randn(SHAPE, dtype=torch.complex64, generator=torch.Generator().manual_seed(seed))
    return y, mean + math.sqrt(var) * z


# Moment recursions of these exact linear-Gaussian schemes (200 steps) put the discretisation
# error at <= 0.013 sd on the mean and <= 2.8% on the variance (worst: Euler ODE, -2.75%; PC with
# snr 0.5 inflates the variance by +1.4%). Allow 0.02 sd and 3.5%.
MEAN_ALLOW, VAR_ALLOW, STEPS = 0.02, 0.035, 200

OU_SAMPLERS = {
    "pc-rd-0": lambda sde, fn, y, ts, **kw: sample_pc(sde, fn, y, ts, corrector_steps=0, **kw),
    "pc-rd-1": lambda sde, fn, y, ts, **kw: sample_pc(sde, fn, y, ts, corrector_steps=1, **kw),
    "pc-em-0": lambda sde, fn, y, ts, **kw: sample_pc(
        sde, fn, y, ts, predictor=euler_maruyama_step, corrector_steps=0, **kw
    ),
    "pc-em-1": lambda sde, fn, y, ts, **kw: sample_pc(
        sde, fn, y, ts, predictor=euler_maruyama_step, corrector_steps=1, **kw
    ),
    "ode-euler": sample_ode_euler,
    "ode-heun": sample_ode_heun,
}


@pytest.mark.parametrize("name", sorted(OU_SAMPLERS))
def test_ou_samplers_reach_the_gaussian_posterior(name):
    sampler = OU_SAMPLERS[name]
    ts = time_grid(STEPS)
    y, x_start = exact_start(seed=1)
    gen = torch.Generator().manual_seed(2)
    out = sampler(OU, gaussian_score(OU), y, ts, x_start=x_start, generator=gen)
    mean, var = ou_target(ts[-1].item())
    assert out.shape == SHAPE and out.dtype == y.dtype
    assert matches(out, mean, var, mean_allow=MEAN_ALLOW, var_allow=VAR_ALLOW), name


@pytest.mark.parametrize("name", ["pc-rd-0", "pc-rd-1", "ode-heun"])
def test_a_wrong_score_fails_the_same_check(name):
    ts = time_grid(STEPS)
    y, x_start = exact_start(seed=1)
    out = OU_SAMPLERS[name](
        OU,
        gaussian_score(OU, factor=2.0),
        y,
        ts,
        x_start=x_start,
        generator=torch.Generator().manual_seed(2),
    )
    mean, var = ou_target(ts[-1].item())
    assert not matches(out, mean, var, mean_allow=MEAN_ALLOW, var_allow=VAR_ALLOW)


def gaussian_data_fn(sde: SBVESDE, gain: float = 1.0):
    """E[x0 | x_t] under the bridge: x_t ~ CN(w_x m0 + w_y y, w_x^2 v0 + s_t^2) (gain breaks it)."""

    def data_fn(x, y, t):
        w_y = sde.sigma_t(t) ** 2 / sde.sigma_T**2
        w_x = 1 - w_y
        var = (w_x**2 * V0 + sde.marginal_std(t) ** 2).clamp_min(1e-30)  # 0 only at t = T
        mean = append_dims(w_x, x.ndim) * M0 + append_dims(w_y, x.ndim) * y
        return M0 + gain * append_dims(w_x * V0 / var, x.ndim) * (x - mean)

    return data_fn


def sb_recursion(ts: np.ndarray, gain: float = 1.0) -> tuple[complex, float]:
    """Exact output moments of the first-order SB-SDE scheme (it is affine-Gaussian here).

    x_t = (1 - r)(m0 + K (x_s - μ_s)) + r x_s + σ_t sqrt(1 - r) z, r = σ_t^2/σ_s^2, K the gain.
    """
    log_k = math.log(SB.k)
    sig2 = SB.c * np.expm1(2 * log_k * ts) / (2 * log_k)
    w_y = sig2 / sig2[0]
    w_x, bridge_var = 1 - w_y, sig2 * (sig2[0] - sig2) / sig2[0]
    mean, var = complex(Y0), 0.0
    for i in range(len(ts) - 1):
        mu_s = w_x[i] * M0 + w_y[i] * Y0
        gain_i = gain * w_x[i] * V0 / max(w_x[i] ** 2 * V0 + bridge_var[i], 1e-30)
        r = sig2[i + 1] / sig2[i]
        a, b = (1 - r) * gain_i + r, (1 - r) * (M0 - gain_i * mu_s)
        noise = sig2[i + 1] * (1 - r) if i + 2 < len(ts) else 0.0
        mean, var = a * mean + b, a * a * var + noise
    return mean, var


def test_sb_sde_sampler_moments():
    """The mean propagates exactly; the variance is the scheme's own (first order, biased low).

    Replacing x0 by E[x0 | x_s] loses Var(x0 | x_s) at each step, so at 200 steps the output
    variance is ~12% below the bridge marginal's; we check it against the exact recursion.
    """
    ts = time_grid(STEPS + 1, t_eps=1e-4, dtype=torch.float64)
    y = torch.full(SHAPE, Y0, dtype=torch.complex64)
    gen = torch.Generator().manual_seed(3)
    out = sample_sb(SB, gaussian_data_fn(SB), y, ts, stochastic=True, generator=gen)
    t_end = ts[-1:]
    bridge_mean = SB.marginal_mean(torch.full((1,), M0), torch.full((1,), Y0), t_end).item()
    mean, var = sb_recursion(ts.numpy())
    assert abs(mean - bridge_mean) < 1e-6  # M0 went through complex64
    assert matches(out, mean, var, mean_allow=0.0, var_allow=0.0)
    bad = sample_sb(
        SB,
        gaussian_data_fn(SB, gain=2.0),
        y,
        ts,
        stochastic=True,
        generator=torch.Generator().manual_seed(3),
    )
    assert not matches(bad, mean, var, mean_allow=0.0, var_allow=0.0)


def test_sb_ode_sampler_follows_the_mean_path():
    """From the point mass x_T = y the exact ODE stays on the mean path w_x m0 + w_y y."""
    ts = time_grid(31, t_eps=1e-4)
    y = torch.full((2, 1, 3, 4), Y0, dtype=torch.complex64)
    out = sample_sb(SB, gaussian_data_fn(SB), y, ts)
    expected = SB.marginal_mean(torch.full_like(y, M0), y, ts[-1].expand(2))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    late = sample_sb(SB, gaussian_data_fn(SB), y, ts, model_time="current")
    assert (late - expected).abs().max() > 1e-3  # sgmse's time convention is off by one step


def counting(fn):
    calls = []

    def wrapped(x, y, t):
        calls.append(t[0].item())
        return fn(x, y, t)

    return wrapped, calls


@pytest.mark.parametrize("predictor", [reverse_diffusion_step, euler_maruyama_step])
@pytest.mark.parametrize("corrector_steps", [0, 1, 2])
def test_nfe_pc(predictor, corrector_steps):
    y = torch.zeros(2, 1, 3, 4, dtype=torch.complex64)
    fn, calls = counting(gaussian_score(OU))
    sample_pc(OU, fn, y, time_grid(7), predictor=predictor, corrector_steps=corrector_steps)
    assert len(calls) == 7 * (corrector_steps + 1)


@pytest.mark.parametrize(("sampler", "nfe"), [(sample_ode_euler, 9), (sample_ode_heun, 2 * 8 + 1)])
def test_nfe_ode(sampler, nfe):
    y = torch.zeros(2, 1, 3, 4, dtype=torch.complex64)
    fn, calls = counting(gaussian_score(OU))
    steps = []
    sampler(OU, fn, y, time_grid(9), callback=lambda i, t, x: steps.append(i))
    assert len(calls) == nfe and steps == list(range(9))


def test_nfe_sb():
    y = torch.zeros(2, 1, 3, 4, dtype=torch.complex64)
    fn, calls = counting(gaussian_data_fn(SB))
    sample_sb(SB, fn, y, time_grid(9, t_eps=1e-4))
    assert len(calls) == 8 and calls[0] == 1.0  # the model sees x_T = y at t = T


SMALL = (2, 1, 5, 8)


def small_y():
    return torch.full(SMALL, Y0, dtype=torch.complex64)


RANDOM_SAMPLERS = {
    "pc": lambda y, **kw: sample_pc(OU, gaussian_score(OU), y, time_grid(10), **kw),
    "ode": lambda y, **kw: sample_ode_heun(OU, gaussian_score(OU), y, time_grid(10), **kw),
    "sb-sde": lambda y, **kw: sample_sb(
        SB, gaussian_data_fn(SB), y, time_grid(10, t_eps=1e-4), stochastic=True, **kw
    ),
}


@pytest.mark.parametrize("name", sorted(RANDOM_SAMPLERS))
def test_reproducible_under_a_seed(name):
    run = RANDOM_SAMPLERS[name]
    a = run(small_y(), generator=torch.Generator().manual_seed(5))
    b = run(small_y(), generator=torch.Generator().manual_seed(5))
    c = run(small_y(), generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", sorted(RANDOM_SAMPLERS))
def test_lengths_mask_and_per_item_generators(name):
    run = RANDOM_SAMPLERS[name]
    lengths = torch.tensor([8, 5])
    gens = [torch.Generator().manual_seed(10), torch.Generator().manual_seed(11)]
    out = run(small_y(), lengths=lengths, generator=gens)
    assert torch.all(out[1, ..., 5:] == 0) and torch.all(out[0] != 0)
    # The score is elementwise and noise is drawn per item, so each item equals its own run.
    for i in range(2):
        alone = run(
            small_y()[i : i + 1],
            lengths=lengths[i : i + 1],
            generator=torch.Generator().manual_seed(10 + i),
        )
        torch.testing.assert_close(out[i : i + 1], alone, rtol=1e-6, atol=1e-6)
    # One shared generator instead: item 1's noise depends on the batch it is in.
    shared = run(small_y(), lengths=lengths, generator=torch.Generator().manual_seed(11))
    alone = run(small_y()[1:2], lengths=lengths[1:2], generator=torch.Generator().manual_seed(11))
    assert not torch.allclose(shared[1:2], alone)


def test_masked_ode_equals_the_truncated_item():
    """Valid frames do not see the padding: sampling item 1 cut to its length gives the same."""
    y = small_y()
    x_start = OU.prior_sample(y, generator=torch.Generator().manual_seed(4))
    out = sample_ode_euler(
        OU, gaussian_score(OU), y, time_grid(10), x_start=x_start, lengths=torch.tensor([8, 5])
    )
    cut = sample_ode_euler(
        OU, gaussian_score(OU), y[1:2, ..., :5], time_grid(10), x_start=x_start[1:2, ..., :5]
    )
    torch.testing.assert_close(out[1:2, ..., :5], cut)
    assert torch.all(out[1, ..., 5:] == 0)


def test_runs_in_double_precision():
    y = torch.full(SMALL, Y0, dtype=torch.complex128)
    out = sample_pc(OU, gaussian_score(OU), y, time_grid(5), generator=torch.Generator())
    assert out.dtype == torch.complex128
    out = sample_sb(SB, gaussian_data_fn(SB), y, time_grid(5, t_eps=1e-4), stochastic=True)
    assert out.dtype == torch.complex128


def test_predictors_agree_and_corrector_is_ald():
    """Both predictors are the same update for these SDEs; the corrector uses ε = 2 (r σ(t))^2."""
    y, x = small_y(), torch.randn(SMALL, dtype=torch.complex64)
    t, dt = torch.full((2,), 0.6), torch.tensor(0.05)
    fn = gaussian_score(OU)
    a = reverse_diffusion_step(OU, fn, x, y, t, dt, generator=torch.Generator().manual_seed(1))
    b = euler_maruyama_step(OU, fn, x, y, t, dt, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b)
    z = torch.randn(SMALL, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    eps = 2 * (0.5 * OU.marginal_std(t)) ** 2
    expected = x + append_dims(eps, 4) * fn(x, y, t) + append_dims((2 * eps).sqrt(), 4) * z
    got, _ = annealed_langevin_step(
        OU, fn, x, y, t, snr=0.5, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("corrector_steps", [0, 1, 2])
def test_pc_matches_reference_sampler(corrector_steps):
    from sgmse.sampling import get_pc_sampler
    from sgmse.sdes import OUVESDE as RefOUVESDE

    ref_sde = RefOUVESDE(theta=1.5, sigma_min=0.05, sigma_max=0.5, N=30)
    y = torch.randn(2, 1, 6, 9, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    fn = gaussian_score(OU)
    # The reference draws its noise with randn_like from the global generator, in the same order
    # (prior, then per step: corrector draws, predictor draw), so equal seeds give equal noise.
    torch.manual_seed(21)
    corrector = "ald" if corrector_steps else "none"
    ref_out, ref_nfe = get_pc_sampler(
        "reverse_diffusion", corrector, ref_sde, fn, y, snr=0.5, corrector_steps=corrector_steps
    )()
    out = sample_pc(
        OU,
        fn,
        y,
        time_grid(30),
        corrector_steps=corrector_steps,
        snr=0.5,
        generator=torch.Generator().manual_seed(21),
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    assert ref_nfe == 30 * (corrector_steps + 1)


def test_sb_matches_reference_sampler():
    from sgmse.sampling import get_sb_sampler
    from sgmse.sdes import SBVESDE as RefSBVESDE

    y = torch.randn(2, 1, 6, 9, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    sb_ref = RefSBVESDE(k=2.6, c=0.4, N=20)
    fn = gaussian_data_fn(SB)
    torch.manual_seed(8)
    ref_out, _ = get_sb_sampler(sb_ref, fn, y, sampler_type="sde")()
    out = sample_sb(
        SB,
        fn,
        y,
        time_grid(21, t_eps=1e-4),
        stochastic=True,
        model_time="current",
        generator=torch.Generator().manual_seed(8),
    )
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    # ODE: the reference regularises σ̄ with eps = 1e-8 inconsistently; the first step from T is
    # off by ~(σ_T - 1)/σ_T^2 σ_t σ̄_t y whatever eps is, so compare where σ_T = 1 (c = 2 ln k /
    # (k^2 - 1)); what is left is σ̄(T) = sqrt(eps) = 1e-4 in the reference.
    c_unit = 2 * math.log(2.6) / (2.6**2 - 1)
    sb_unit = SBVESDE(k=2.6, c=c_unit)
    fn = gaussian_data_fn(sb_unit)
    ref_out, _ = get_sb_sampler(RefSBVESDE(k=2.6, c=c_unit, N=20), fn, y, sampler_type="ode")()
    out = sample_sb(sb_unit, fn, y, time_grid(21, t_eps=1e-4), model_time="current")
    torch.testing.assert_close(out, ref_out, rtol=1e-3, atol=1e-3)


def test_rejects_bad_arguments():
    y = small_y()
    with pytest.raises(ValueError):
        time_grid(0)
    with pytest.raises(ValueError):
        time_grid(10, t_eps=1.5)
    with pytest.raises(ValueError):
        sample_pc(OU, gaussian_score(OU), y, time_grid(3), corrector_steps=-1)
    with pytest.raises(ValueError):
        sample_pc(OU, gaussian_score(OU), y, time_grid(3), generator=[torch.Generator()])
    with pytest.raises(ValueError):
        sample_sb(SB, gaussian_data_fn(SB), y, time_grid(3), model_time="next")
