"""Reverse-time samplers for the SDEs in :mod:`audiodiff.sdes`, written as plain functions.

Conventions shared by every sampler here:

* ``score_fn(x, y, t)`` returns the score (SGMSE+ convention, -(x - μ)/s^2 for CN(μ, s^2));
  ``data_fn(x, y, t)`` returns an estimate of x0 (Schrödinger bridge). Each call is one NFE.
* ``timesteps`` is a decreasing 1-D grid, usually ``time_grid(...)``; it is cast to y's real dtype
  and device, so the samplers run wherever y lives.
* ``x_start`` defaults to ``sde.prior_sample(y, generator=generator)``.
* ``generator`` is a ``torch.Generator`` or a sequence of B of them, one per batch item. With one
  generator the noise of item i depends on the batch it is in; with per-item generators a batch
  reproduces the single-item runs (up to float rounding).
* ``lengths`` (B,) are valid frame counts along the last axis: frames beyond them are zeroed in
  the start state, after every step and in the result.
* ``callback(i, t, x)`` is called after the step that started at grid time ``t = timesteps[i]``.
* Nothing is wrapped in ``torch.no_grad``; the caller decides whether graphs are recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from audiodiff.sdes import OUVESDE, SBVESDE
from audiodiff.tensors import append_dims, complex_randn, frame_mask

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]
GeneratorArg = torch.Generator | Sequence[torch.Generator] | None


def time_grid(
    num_steps: int,
    T: float = 1.0,
    t_eps: float = 0.03,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``num_steps`` equally spaced times from T down to t_eps (both included), as in SGMSE+."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0.0 <= t_eps < T:
        raise ValueError(f"need 0 <= t_eps < T, got t_eps={t_eps}, T={T}")
    return torch.linspace(T, t_eps, num_steps, device=device, dtype=dtype)


def _noise_like(x: torch.Tensor, generator: GeneratorArg) -> torch.Tensor:
    """CN(0, 1) noise shaped like x, drawn per item when given one generator per item."""
    if generator is None or isinstance(generator, torch.Generator):
        return complex_randn(tuple(x.shape), generator=generator, device=x.device, dtype=x.dtype)
    if len(generator) != x.shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
    item_shape = tuple(x.shape[1:])
    draws = [
        complex_randn(item_shape, generator=g, device=x.device, dtype=x.dtype) for g in generator
    ]
    return torch.stack(draws)


def _grid(timesteps: torch.Tensor | Sequence[float], y: torch.Tensor) -> torch.Tensor:
    grid = torch.as_tensor(timesteps).to(device=y.device, dtype=y.real.dtype)
    if grid.ndim != 1 or grid.numel() == 0:
        raise ValueError(f"timesteps must be a non-empty 1-D grid, got shape {tuple(grid.shape)}")
    return grid


def _batch_time(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Grid time (0-d) -> per-example times (B,)."""
    return t.repeat(x.shape[0])


def _step_sizes(dt, t: torch.Tensor) -> torch.Tensor:
    """A step size (number, 0-d or (B,) tensor) -> (B,) tensor on t's device and dtype."""
    return torch.as_tensor(dt, dtype=t.dtype, device=t.device) * torch.ones_like(t)


def _frames_mask(lengths: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor | None:
    """(B, 1, ..., 1, T) boolean mask over the last axis of y, or None."""
    if lengths is None:
        return None
    mask = frame_mask(torch.as_tensor(lengths, device=y.device), y.shape[-1])
    return mask.reshape(y.shape[0], *([1] * (y.ndim - 2)), y.shape[-1])


def _masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x if mask is None else x * mask


def _initial_state(sde: OUVESDE | SBVESDE, y, x_start, generator, mask) -> torch.Tensor:
    if x_start is None:
        if generator is None or isinstance(generator, torch.Generator):
            x_start = sde.prior_sample(y, generator=generator)
        else:
            x_start = torch.cat(
                [sde.prior_sample(y[i : i + 1], generator=g) for i, g in enumerate(generator)]
            )
    return _masked(x_start, mask)


def _reverse_mean(sde: OUVESDE, score_fn: ModelFn, x, y, t, dt) -> torch.Tensor:
    """Noise-free reverse-diffusion update x - f·dt + g^2·dt·score (the discretised SDE)."""
    dt = append_dims(_step_sizes(dt, t), x.ndim)
    g2 = append_dims(sde.diffusion(t) ** 2, x.ndim)
    return x - sde.drift(x, y, t) * dt + g2 * dt * score_fn(x, y, t)


def reverse_diffusion_step(
    sde: OUVESDE,
    score_fn: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    dt,
    *,
    generator: GeneratorArg = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse-diffusion predictor from t to t - dt (Song et al. 2021, App. E), one NFE.

    With the forward step discretised as f_i = f·dt and G_i = g·sqrt(dt) (SGMSE+):
    x_mean = x - f_i + G_i^2 score, x = x_mean + G_i z, z ~ CN(0, 1).
    """
    # Mean: undo the forward drift and follow the score, x - f_i + G_i^2 s(x, t).
    x_mean = _reverse_mean(sde, score_fn, x, y, t, dt)
    # Noise: G_i z with G_i = g(t) sqrt(dt).
    step_std = append_dims(sde.diffusion(t) * torch.sqrt(_step_sizes(dt, t)), x.ndim)
    return x_mean + step_std * _noise_like(x, generator), x_mean


def euler_maruyama_step(
    sde: OUVESDE,
    score_fn: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    dt,
    *,
    generator: GeneratorArg = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler-Maruyama step of the reverse SDE dx = [f - g^2 score] dt + g dw̄ from t to t - dt.

    For SDEs whose drift and diffusion are evaluated at the start of the step this is the same
    update as :func:`reverse_diffusion_step`; it is kept as the textbook form of the predictor.
    (sgmse 0.1.2's version always steps by 1/N whatever the grid; here dt is the grid's step.)
    """
    dt = _step_sizes(dt, t)
    # Deterministic part: walk backwards in time along the reverse drift.
    drift = sde.reverse_drift(x, y, t, score_fn(x, y, t))
    x_mean = x - drift * append_dims(dt, x.ndim)
    # Stochastic part: Brownian increment of variance g^2 dt.
    step_std = append_dims(sde.diffusion(t) * torch.sqrt(dt), x.ndim)
    return x_mean + step_std * _noise_like(x, generator), x_mean


def annealed_langevin_step(
    sde: OUVESDE,
    score_fn: ModelFn,
    x: torch.Tensor,
    y: torch.Tensor,
    t: torch.Tensor,
    *,
    snr: float,
    generator: GeneratorArg = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One annealed-Langevin corrector update at fixed t, one NFE.

    Step size ε = 2 (r σ(t))^2 with r = ``snr`` and σ(t) the SDE's marginal std (NCSN-style ALD,
    as used by SGMSE+): x_mean = x + ε score, x = x_mean + sqrt(2ε) z, z ~ CN(0, 1).
    """
    # Step size from the target signal-to-noise ratio and the noise level at t.
    eps = append_dims(2.0 * (snr * sde.marginal_std(t)) ** 2, x.ndim)
    # Langevin move: gradient step on log p_t plus fresh noise of matching scale.
    x_mean = x + eps * score_fn(x, y, t)
    return x_mean + torch.sqrt(2.0 * eps) * _noise_like(x, generator), x_mean


def sample_pc(
    sde: OUVESDE,
    score_fn: ModelFn,
    y: torch.Tensor,
    timesteps,
    *,
    predictor=reverse_diffusion_step,
    corrector_steps: int = 1,
    snr: float = 0.5,
    x_start: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Predictor-corrector sampler of SGMSE+ (Song et al. 2021, Algorithm 2).

    At every grid time t_i: ``corrector_steps`` Langevin updates, then one predictor step to
    t_{i+1}. The last step runs from t_N to 0 (dt = t_N) and its noise-free mean is returned.
    NFE = len(timesteps) * (corrector_steps + 1).
    """
    if corrector_steps < 0:
        raise ValueError(f"corrector_steps must be >= 0, got {corrector_steps}")
    grid = _grid(timesteps, y)
    mask = _frames_mask(lengths, y)
    x = x_mean = _initial_state(sde, y, x_start, generator, mask)
    for i in range(len(grid)):
        t = _batch_time(grid[i], y)
        dt = grid[i] - grid[i + 1] if i + 1 < len(grid) else grid[i]
        # Corrector: Langevin MCMC towards p_t at fixed t.
        for _ in range(corrector_steps):
            x, _ = annealed_langevin_step(sde, score_fn, x, y, t, snr=snr, generator=generator)
            x = _masked(x, mask)
        # Predictor: one step of the reverse SDE from t_i to t_i - dt.
        x, x_mean = predictor(sde, score_fn, x, y, t, dt, generator=generator)
        x, x_mean = _masked(x, mask), _masked(x_mean, mask)
        if callback is not None:
            callback(i, grid[i], x)
    return x_mean


def _pf_velocity(sde: OUVESDE, score_fn: ModelFn, x, y, t) -> torch.Tensor:
    return sde.probability_flow_drift(x, y, t, score_fn(x, y, t))


def _denoise_last(sde: OUVESDE, score_fn, x, y, grid, mask, callback) -> torch.Tensor:
    """Final reverse-diffusion mean step from t_N to 0, as closing the SGMSE+ ODE sampler."""
    x = _masked(_reverse_mean(sde, score_fn, x, y, _batch_time(grid[-1], y), grid[-1]), mask)
    if callback is not None:
        callback(len(grid) - 1, grid[-1], x)
    return x


def sample_ode_euler(
    sde: OUVESDE,
    score_fn: ModelFn,
    y: torch.Tensor,
    timesteps,
    *,
    x_start: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Probability-flow ODE dx = [f - ½ g^2 score] dt (Song et al. 2021, Eq. 13), explicit Euler.

    Integrates from timesteps[0] to timesteps[-1], then takes one noise-free reverse-diffusion
    step from t_N to 0. Randomness only enters through the default start state.
    NFE = (len(timesteps) - 1) + 1 = len(timesteps).
    """
    grid = _grid(timesteps, y)
    mask = _frames_mask(lengths, y)
    x = _initial_state(sde, y, x_start, generator, mask)
    for i in range(len(grid) - 1):
        t, dt = _batch_time(grid[i], y), grid[i] - grid[i + 1]
        # Euler step backwards in time along the probability-flow velocity.
        x = _masked(x - _pf_velocity(sde, score_fn, x, y, t) * dt, mask)
        if callback is not None:
            callback(i, grid[i], x)
    return _denoise_last(sde, score_fn, x, y, grid, mask, callback)


def sample_ode_heun(
    sde: OUVESDE,
    score_fn: ModelFn,
    y: torch.Tensor,
    timesteps,
    *,
    x_start: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Probability-flow ODE (Song et al. 2021, Eq. 13) with Heun's second-order method.

    Each interval uses the velocity at both ends (trapezoidal rule on an Euler guess), then one
    noise-free reverse-diffusion step from t_N to 0. NFE = 2 (len(timesteps) - 1) + 1.
    """
    grid = _grid(timesteps, y)
    mask = _frames_mask(lengths, y)
    x = _initial_state(sde, y, x_start, generator, mask)
    for i in range(len(grid) - 1):
        t, t_next = _batch_time(grid[i], y), _batch_time(grid[i + 1], y)
        dt = grid[i] - grid[i + 1]
        # Euler guess at t_{i+1}.
        v = _pf_velocity(sde, score_fn, x, y, t)
        x_guess = _masked(x - v * dt, mask)
        # Trapezoidal correction with the velocity at the guess.
        v_next = _pf_velocity(sde, score_fn, x_guess, y, t_next)
        x = _masked(x - 0.5 * (v + v_next) * dt, mask)
        if callback is not None:
            callback(i, grid[i], x)
    return _denoise_last(sde, score_fn, x, y, grid, mask, callback)


def _sb_ode_step(sde: SBVESDE, x, x0_hat, y, s, t) -> torch.Tensor:
    """x_t = μ_t(x̂0) + (s_t / s_s)(x_s - μ_s(x̂0)), with the offset dropped where s_s = 0."""
    std_s, std_t = sde.marginal_std(s), sde.marginal_std(t)
    shrink = std_t / torch.where(std_s > 0, std_s, torch.ones_like(std_s)) * (std_s > 0)
    offset = x - sde.marginal_mean(x0_hat, y, s)
    return sde.marginal_mean(x0_hat, y, t) + append_dims(shrink, x.ndim) * offset


def _sb_sde_step(sde: SBVESDE, x, x0_hat, s, t, noise) -> torch.Tensor:
    """x_t = x̂0 + r (x_s - x̂0) + σ_t sqrt(1 - r) z with r = σ_t^2 / σ_s^2 (z = None: no noise)."""
    ratio = (sde.sigma_t(t) / sde.sigma_t(s)) ** 2
    x = x0_hat + append_dims(ratio, x.ndim) * (x - x0_hat)
    if noise is None:
        return x
    return x + append_dims(sde.sigma_t(t) * torch.sqrt(1.0 - ratio), x.ndim) * noise


def sample_sb(
    sde: SBVESDE,
    data_fn: ModelFn,
    y: torch.Tensor,
    timesteps,
    *,
    stochastic: bool = False,
    model_time: str = "previous",
    x_start: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    generator: GeneratorArg = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """First-order Schrödinger-bridge sampler (Jukić et al. 2024), from x_T = y down the grid.

    With x̂0 = data_fn(x_s, y, s), each step s -> t uses the bridge marginal CN(μ_t(x̂0), s_t^2):

    * ODE (``stochastic=False``): keep the standardised offset,
      x_t = μ_t(x̂0) + (s_t / s_s) (x_s - μ_s(x̂0)); at s = T (s_T = 0) the offset is 0.
    * SDE (``stochastic=True``): posterior of the base process between x̂0 and x_s,
      x_t = x̂0 + (σ_t/σ_s)^2 (x_s - x̂0) + σ_t sqrt(1 - (σ_t/σ_s)^2) z; no noise on the last step.

    ``model_time`` is the time given to data_fn: "previous" (s, the time x_s belongs to) or
    "current" (t, the step's target time, which is what sgmse 0.1.2 does).
    Pass ``time_grid(N + 1, t_eps=1e-4)`` for N steps as in the reference. NFE = len(timesteps) - 1.
    """
    if model_time not in ("previous", "current"):
        raise ValueError(f"model_time must be 'previous' or 'current', got {model_time!r}")
    grid = _grid(timesteps, y)
    mask = _frames_mask(lengths, y)
    x = _initial_state(sde, y, x_start, generator, mask)
    for i in range(len(grid) - 1):
        s, t = _batch_time(grid[i], y), _batch_time(grid[i + 1], y)
        # Data prediction from the current state.
        x0_hat = data_fn(x, y, s if model_time == "previous" else t)
        # First-order move to t given x̂0 (ODE or SDE form).
        if stochastic:
            noise = _noise_like(x, generator) if i + 2 < len(grid) else None
            x = _sb_sde_step(sde, x, x0_hat, s, t, noise)
        else:
            x = _sb_ode_step(sde, x, x0_hat, y, s, t)
        x = _masked(x, mask)
        if callback is not None:
            callback(i, grid[i], x)
    return x
