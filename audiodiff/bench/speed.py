"""The speed table: one row per preset x mode x method x NFE x batch size (x precision)."""

from __future__ import annotations

import statistics
import sys
from dataclasses import asdict, dataclass, replace

from .measure import build_bench_model, measure, noisy_speech


@dataclass(frozen=True)
class Case:
    """One benchmark configuration (one row per precision)."""

    preset: str
    mode: str
    method: str
    steps: int
    corrector_steps: int
    nfe: int
    batch: int
    seconds: float
    precision: str = "fp32"

    def overrides(self) -> dict:
        """Keyword arguments of ``Enhancer.__call__`` for this case."""
        if self.mode == "predictive":
            return {"mode": "predictive"}
        names = ("mode", "method", "steps", "corrector_steps")
        return {name: getattr(self, name) for name in names}


def steps_for(mode: str, method: str, nfe: int, corrector_steps: int) -> tuple[int, int] | None:
    """(steps N, corrector steps) that spend exactly ``nfe`` evaluations, or None if none do.

    NFE: PC N·(C + 1), ODE Euler N, ODE Heun 2(N - 1) + 1, SB (bridge mode only) N (see
    :mod:`audiodiff.sampling`); StoRM adds one predictor pass and runs without corrector, the
    score mode's PC uses ``corrector_steps``.
    """
    if (mode == "bridge") != method.startswith("sb_"):
        return None
    if mode == "bridge":
        return (nfe, 0) if nfe >= 1 else None
    budget = nfe - 1 if mode == "storm" else nfe
    corrector = corrector_steps if mode == "score" and method == "pc" else 0
    if method == "pc":
        steps, spent = budget // (corrector + 1), (budget // (corrector + 1)) * (corrector + 1)
    elif method == "ode_euler":
        steps, spent = budget, budget
    else:
        steps = (budget + 1) // 2
        spent = 2 * (steps - 1) + 1
    return (steps, corrector) if steps >= 1 and spent == budget else None


def plan_cases(plan, preset: str, mode: str) -> list[Case]:
    """The rows of one (preset, mode): every NFE x method x batch size that can be run."""
    if mode == "predictive":
        settings, budgets = [("-", 0, 0, 1)], []
    else:
        settings, budgets = [], plan.nfe or [plan.nfe_defaults[mode]]
    methods = [m for m in plan.methods if m.startswith("sb_") == (mode == "bridge")]
    if mode == "bridge" and not methods:  # the bridge's own sampler unless --methods names one
        methods = ["sb_ode"]
    for nfe in budgets:
        for method in methods:
            found = steps_for(mode, method, nfe, plan.corrector_steps)
            if found is None:
                print(f"bench: no {mode}/{method} setting spends NFE {nfe}", file=sys.stderr)
            else:
                settings.append((method, *found, nfe))
    return [
        Case(preset, mode, method, steps, corrector, nfe, batch, plan.seconds)
        for method, steps, corrector, nfe in settings
        for batch in plan.batch_sizes
    ]


def bench_case(enhancer, probes, case: Case, waves, plan) -> tuple[dict, list]:
    """Time one case; returns its row and the output of the last timed run."""
    batch = list(waves[: case.batch])
    enhancer.batch_size = case.batch
    for probe in probes:
        probe.bf16 = case.precision == "bf16"
    try:
        result = measure(
            lambda: enhancer(batch, enhancer.sample_rate, seed=plan.seed, **case.overrides()),
            enhancer.device,
            plan.repeats,
            probes,
        )
    finally:
        for probe in probes:
            probe.bf16 = False
    wall = statistics.median(result["walls"])
    row = {"kind": "speed", **asdict(case), "nfe_counted": result["calls"][-1]}
    row.update(
        wall_s=wall, wall_all_s=result["walls"], ms_per_nfe=1e3 * wall / case.nfe,
        rtf=wall / case.seconds, x_realtime=case.seconds / wall, items_per_s=case.batch / wall,
        audio_s_per_s=case.batch * case.seconds / wall, peak_mem_mb=result["peak_mb"],
        speedup_vs_b1=None, bf16_max_abs_diff=None, bf16_rel_diff=None,
    )  # fmt: skip
    return row, result["output"]


def speed_rows(plan) -> list[dict]:
    """Every row of the speed table, fp32 and (with ``--bf16``) bf16 next to each other."""
    import numpy as np

    from ..enhance import Enhancer

    rows, waves = [], noisy_speech(plan.seconds, max(plan.batch_sizes))
    for preset in plan.presets:
        models = {}
        for mode in plan.modes:
            kind = mode if mode in ("score", "bridge") else "storm"
            if kind not in models:
                models[kind] = build_bench_model(kind, preset, plan.device, plan.seed)
            model, config, probes = models[kind]
            enhancer = Enhancer(model, config, device=plan.device)
            for case in plan_cases(plan, preset, mode):
                row, fp32 = bench_case(enhancer, probes, case, waves, plan)
                rows.append(row)
                if plan.bf16:
                    bf16_case = replace(case, precision="bf16")
                    row, bf16 = bench_case(enhancer, probes, bf16_case, waves, plan)
                    diff = max(float(np.abs(a - b).max()) for a, b in zip(bf16, fp32))
                    scale = max(float(np.abs(b).max()) for b in fp32)
                    row.update(bf16_max_abs_diff=diff, bf16_rel_diff=diff / max(scale, 1e-30))
                    rows.append(row)
    fields = ("preset", "mode", "method", "steps", "corrector_steps", "seconds", "precision")
    single = {tuple(r[f] for f in fields): r for r in rows if r["batch"] == 1}
    for row in rows:
        base = single.get(tuple(row[f] for f in fields))
        if base is not None and row["batch"] > 1:
            row["speedup_vs_b1"] = row["items_per_s"] / base["items_per_s"]
    return rows
