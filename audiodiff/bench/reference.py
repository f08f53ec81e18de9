"""Our NCSN++ and PC sampler against the reference ``sgmse`` ones: same weights, noise and NFE."""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from .measure import NetworkProbe, bench_presets, model_config, noisy_speech, randomise_, sync
from .speed import steps_for

SNR, T_EPS = 0.5, 0.03


def reference_pair(preset: str, device, seed: int = 0):
    """(our ScoreModel, its probe, the reference sgmse NCSNpp), sharing one set of random weights.

    The reference network is built with the preset's layout and randomised; its weights are mapped
    onto ours by ``convert_reference_state_dict``. On a CUDA machine importing the reference
    compiles its upfirdn2d extension (needs nvcc and ninja), which takes minutes or fails.
    """
    from sgmse.backbones.ncsnpp import NCSNpp as ReferenceNCSNpp

    from ..models import ScoreModel
    from ..nets import build_backbone, convert_reference_state_dict
    from ..sdes import build_sde

    cfg = replace(bench_presets()[preset], in_channels=4)
    layout = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "fourier_scale")
    reference = ReferenceNCSNpp(
        **{k: getattr(cfg, k) for k in layout},
        image_size=cfg.num_freqs,
        fir_kernel=list(cfg.fir_kernel),
    )
    randomise_(reference, seed)
    backbone = build_backbone(cfg)
    backbone.load_state_dict(convert_reference_state_dict(reference.state_dict(), cfg))
    ours = ScoreModel(backbone, build_sde(model_config("score", preset).sde))
    probe = NetworkProbe(backbone, device.type)
    return ours.to(device).eval(), probe, reference.to(device).eval()


def _samplers(ours, probe, reference, steps: int, corrector: int) -> dict:
    """name -> (y -> PC sample (reverse diffusion + ALD), NFE counter); noise from the global RNG
    in the same order on both sides, so equal seeds give equal noise."""
    import torch
    from sgmse.sampling import get_pc_sampler
    from sgmse.sdes import OUVESDE as ReferenceOUVESDE

    from ..sampling import sample_pc, time_grid

    sde, ref_calls = ours.sde, [0]
    ref_sde = ReferenceOUVESDE(sde.theta, sde.sigma_min, sde.sigma_max, N=steps)

    def ref_score(x, y, t):  # sgmse ScoreModel.forward for the ncsnpp backbone
        ref_calls[0] += 1
        return -reference(torch.cat([x, y], dim=1), t)

    def run_ours(y):
        probe.calls = 0
        grid = time_grid(steps, T=sde.T, t_eps=T_EPS, device=y.device)
        return sample_pc(sde, ours, y, grid, corrector_steps=corrector, snr=SNR)

    def run_ref(y):
        ref_calls[0] = 0
        args = ("reverse_diffusion", "ald", ref_sde, ref_score, y)
        return get_pc_sampler(*args, eps=T_EPS, snr=SNR, corrector_steps=corrector)()[0]

    return {"ours": (run_ours, lambda: probe.calls), "ref": (run_ref, lambda: ref_calls[0])}


def reference_row(plan, pair, nfe: int, batch: int) -> dict:
    """Ours vs the reference at the same NFE and batch: same weights, same noise, alternating."""
    import numpy as np
    import torch

    from ..spec import SpecConfig, Spectrogram

    ours, probe, reference = pair
    steps, corrector = steps_for("score", "pc", nfe, plan.corrector_steps)
    runs = _samplers(ours, probe, reference, steps, corrector)
    spec = Spectrogram(SpecConfig())
    y = spec.pad_frames(spec.analyse(torch.from_numpy(np.stack(noisy_speech(plan.seconds, batch)))))
    y = y.to(plan.device)
    x = torch.randn(y.shape, dtype=y.dtype, generator=torch.Generator().manual_seed(1))
    x, t = x.to(plan.device), torch.full((batch,), 0.5, device=plan.device)
    walls, counts, outputs = {"ours": [], "ref": []}, {}, {}
    with torch.inference_mode():
        theirs = -reference(torch.cat([x, y], dim=1), t)  # the networks on one input
        net_diff = float((ours(x, y, t) - theirs).abs().max())
        for name, (run, _) in runs.items():  # the warm-up: both samplers, the same noise
            torch.manual_seed(plan.seed)
            outputs[name] = run(y)
        for r in range(plan.repeats):  # alternating, the first side swapped every repeat
            for name in ("ours", "ref") if r % 2 == 0 else ("ref", "ours"):
                torch.manual_seed(plan.seed + 1 + r)
                sync(plan.device)
                start = time.perf_counter()
                runs[name][0](y)
                sync(plan.device)
                walls[name].append(time.perf_counter() - start)
                counts[name] = runs[name][1]()
    ours_wall, ref_wall = statistics.median(walls["ours"]), statistics.median(walls["ref"])
    net_scale, sample_scale = float(theirs.abs().max()), float(outputs["ref"].abs().max())
    sample_diff = float((outputs["ours"] - outputs["ref"]).abs().max())
    rtol = 2e-2 if plan.device.type == "cuda" else 1e-3  # CUDA convolutions may run in TF32
    agree = net_diff <= rtol * net_scale and sample_diff <= rtol * sample_scale
    return {
        "kind": "reference", "preset": plan.reference_preset, "mode": "score", "method": "pc",
        "steps": steps, "corrector_steps": corrector, "nfe": nfe, "batch": batch,
        "seconds": plan.seconds, "frames": y.shape[-1], "nfe_counted_ours": counts["ours"],
        "nfe_counted_ref": counts["ref"], "ours_wall_s": ours_wall, "ref_wall_s": ref_wall,
        "ours_ms_per_nfe": 1e3 * ours_wall / nfe, "ref_ms_per_nfe": 1e3 * ref_wall / nfe,
        "ratio_ours_to_ref": ours_wall / ref_wall, "net_max_abs_diff": net_diff,
        "net_ref_max_abs": net_scale, "sample_max_abs_diff": sample_diff,
        "sample_ref_max_abs": sample_scale, "agree": agree,
    }  # fmt: skip


def reference_rows(plan) -> list[dict]:
    """Side-by-side rows for the score mode; one error row if the reference cannot be loaded."""
    try:
        pair = reference_pair(plan.reference_preset, plan.device, plan.seed)
    except Exception as err:  # noqa: BLE001 - any failure to import or build it is reported
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        if isinstance(err, ModuleNotFoundError):
            reason = f"{err.name} is not installed: pip install --no-deps sgmse==0.1.2"
        return [{"kind": "reference", "preset": plan.reference_preset, "error": reason}]
    return [
        reference_row(plan, pair, nfe, batch)
        for nfe in plan.nfe or [plan.nfe_defaults["score"]]
        if steps_for("score", "pc", nfe, plan.corrector_steps) is not None
        for batch in plan.reference_batch_sizes
    ]
