"""The inference API: waveform in, enhanced waveform out, on any device.

One pipeline, written once: resample to the model rate -> divide by peak |y| -> compressed STFT ->
pad frames to a multiple of 64 -> reverse sampler -> iSTFT -> undo the scaling -> resample back.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import torch

from . import DEFAULT_MODEL, sampling
from .audio import resample
from .checkpoint import load_pretrained
from .config import SB_SAMPLERS, ModelConfig, SamplerConfig
from .models import StoRM
from .sampling import GeneratorArg
from .spec import Spectrogram, num_frames

CROSSFADE_SECONDS = 0.5  # overlap of consecutive chunks of a long signal
PRECISIONS = ("fp32", "bf16")  # bf16: the networks run under autocast, the sampler in float32

PREDICTOR_STEPS = {
    "reverse_diffusion": sampling.reverse_diffusion_step,
    "euler_maruyama": sampling.euler_maruyama_step,
}


def pick_device(device: str | torch.device | None) -> torch.device:
    """'auto' (or None) -> CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_sampler(
    score_fn,
    sde,
    mean_target: torch.Tensor,
    settings: SamplerConfig,
    *,
    lengths: torch.Tensor | None = None,
    generator: GeneratorArg = None,
) -> torch.Tensor:
    """The configured reverse process for ``score_fn(x, mean_target, t)``, from the SDE's prior.

    For ``sb_ode`` / ``sb_sde`` ``score_fn`` returns x̂0 (a bridge model): ``steps`` calls on
    ``steps + 1`` grid times, the network told each step's target time (as sgmse's
    ``get_sb_sampler``) or, with ``model_time`` ``previous``, the time of its input state.
    """
    device = mean_target.device
    common = {"lengths": lengths, "generator": generator}
    if settings.method in SB_SAMPLERS:
        grid = sampling.time_grid(settings.steps + 1, T=sde.T, t_eps=settings.t_eps, device=device)
        stochastic = settings.method == "sb_sde"
        return sampling.sample_sb(
            sde,
            score_fn,
            mean_target,
            grid,
            stochastic=stochastic,
            model_time=settings.model_time,
            **common,
        )
    grid = sampling.time_grid(settings.steps, T=sde.T, t_eps=settings.t_eps, device=device)
    if settings.method == "pc":
        predictor = PREDICTOR_STEPS[settings.predictor]
        return sampling.sample_pc(
            sde,
            score_fn,
            mean_target,
            grid,
            predictor=predictor,
            corrector_steps=settings.corrector_steps,
            snr=settings.snr,
            **common,
        )
    solver = (
        sampling.sample_ode_euler if settings.method == "ode_euler" else sampling.sample_ode_heun
    )
    return solver(sde, score_fn, mean_target, grid, **common)


def enhance_spectrogram(
    model: torch.nn.Module,
    y: torch.Tensor,
    settings: SamplerConfig,
    mode: str,
    *,
    lengths: torch.Tensor | None = None,
    generator: GeneratorArg = None,
) -> torch.Tensor:
    """Noisy compressed spectrograms y (B, 1, F, T) -> clean estimates, in one of four modes.

    ``predictive``: Ŷ in one pass. ``storm``: the diffusion regenerates from Ŷ (mean target Ŷ, score
    conditioned on [y, Ŷ]; zero steps return Ŷ). ``score``: SGMSE+ from y (a StoRM model's score
    network is then conditioned on [y, y], the task its ``score_task_prob`` training covers).
    ``bridge``: the Schrödinger bridge from x_T = y, the network predicting x̂0 from [x_t, y]; for
    a bridge with a predictor, from x_T = Ŷ with [x_t, y, Ŷ] (the StoRM idea with the SB objective).
    """
    if mode == "predictive" or (mode == "storm" and settings.steps == 0):
        return model.predictor(y) if isinstance(model, StoRM) else model(y)
    if settings.steps == 0:
        raise ValueError(f"the {mode} mode needs at least one reverse step")
    if isinstance(model, StoRM):
        mean_target = model.predictor(y) if mode in ("storm", "bridge") else y
        cond = StoRM.condition(y, mean_target)
        score_model = model.score
    else:
        mean_target, cond, score_model = y, y, model

    def score_fn(x, _mean_target, t):
        return score_model(x, cond, t)

    return run_sampler(
        score_fn, score_model.sde, mean_target, settings, lengths=lengths, generator=generator
    )


def _as_channels(waveform) -> tuple[torch.Tensor, object]:
    """Any (..., L) array/tensor -> ((N, L) float32 CPU tensor, how to restore its type)."""
    if isinstance(waveform, np.ndarray):
        dtype = waveform.dtype if np.issubdtype(waveform.dtype, np.floating) else np.float32
        flat = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
        return flat.reshape(-1, waveform.shape[-1]), ("numpy", waveform.shape, dtype)
    if isinstance(waveform, torch.Tensor):
        dtype = waveform.dtype if waveform.is_floating_point() else torch.float32
        flat = waveform.detach().to("cpu", torch.float32)
        return flat.reshape(-1, waveform.shape[-1]), (
            "torch",
            waveform.shape,
            dtype,
            waveform.device,
        )
    raise TypeError(f"expected a numpy array or torch tensor, got {type(waveform).__name__}")


def _restore(channels: torch.Tensor, how) -> np.ndarray | torch.Tensor:
    if how[0] == "numpy":
        return channels.reshape(how[1]).numpy().astype(how[2], copy=False)
    return channels.reshape(how[1]).to(device=how[3], dtype=how[2])


class Enhancer:
    """Enhance speech with a score-based model.

    >>> enhancer = Enhancer.from_pretrained()  # the bundled model, or a folder
    >>> clean = enhancer(noisy, 16000)  # numpy/torch, (L,) or (C, L); same type, shape, rate
    """

    def __init__(
        self,
        model: torch.nn.Module,
        config: ModelConfig,
        device=None,
        batch_size: int = 8,
        chunk_seconds: float = 5.0,
        precision: str = "fp32",
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        self.precision = precision
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.spectrogram = Spectrogram(config.spec)
        self.batch_size = batch_size
        if chunk_seconds < 2 * CROSSFADE_SECONDS:
            raise ValueError(
                f"chunk_seconds must be >= {2 * CROSSFADE_SECONDS}, got {chunk_seconds}"
            )
        self.chunk_seconds = chunk_seconds

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        device=None,
        batch_size: int = 8,
        chunk_seconds: float = 5.0,
        precision: str = "fp32",
    ) -> Enhancer:
        model, config = load_pretrained(name_or_path)
        return cls(model, config, device, batch_size, chunk_seconds, precision)

    @property
    def sample_rate(self) -> int:
        return self.config.spec.sample_rate

    def __call__(
        self,
        waveform,
        sample_rate: int,
        *,
        seed: int | list[int] | None = None,
        atten_lim_db: float | None = None,
        **sampler_overrides,
    ):
        """Enhance one waveform (numpy/torch, time on the last axis) or a list of them.

        ``seed``: one for all, or one per item of a list; item ``i`` of a list with seed ``s_i``
        comes out exactly as it would alone with ``seed=s_i`` (up to float rounding).

        ``sampler_overrides`` replace fields of the model's sampler config, e.g. ``mode="storm"``,
        ``steps=10``, ``corrector_steps=0``, ``method="ode_heun"``. ``atten_lim_db``: attenuate
        the input by at most this much (see :func:`limit_attenuation`); None: no limit.
        """
        check_atten_lim(atten_lim_db)
        settings = replace(self.config.sampler, **sampler_overrides)
        mode = settings.mode or self.config.default_mode
        if mode not in self.config.modes:
            raise ValueError(
                f"a {self.config.kind!r} model runs modes {self.config.modes}, not {mode!r}"
            )
        settings = replace(settings, mode=mode)
        items = waveform if isinstance(waveform, (list, tuple)) else [waveform]
        converted = [_as_channels(w) for w in items]
        rows = [row for channels, _ in converted for row in channels]
        if isinstance(seed, (list, tuple)):  # per-item seeds -> (item seed, channel) per row
            if len(seed) != len(items):
                raise ValueError(f"got {len(seed)} seeds for {len(items)} signals")
            seed = [(s, c) for s, (ch, _) in zip(seed, converted) for c in range(ch.shape[0])]
        enhanced = self.enhance_rows(rows, sample_rate, settings, seed)
        if atten_lim_db is not None:
            enhanced = [limit_attenuation(e, r, atten_lim_db) for e, r in zip(enhanced, rows)]
        outputs, start = [], 0
        for channels, how in converted:
            count = channels.shape[0]
            outputs.append(_restore(torch.stack(enhanced[start : start + count]), how))
            start += count
        return outputs if isinstance(waveform, (list, tuple)) else outputs[0]

    def enhance_rows(
        self,
        rows: list[torch.Tensor],
        sample_rate: int,
        settings: SamplerConfig,
        seed: int | list[tuple[int, int]] | None = None,
    ) -> list[torch.Tensor]:
        """Mono signals (L_i,) at ``sample_rate`` -> enhanced mono signals of the same lengths.

        ``seed``: an int (row r is keyed ``(seed, r)``) or one ``(seed, channel)`` key per row.

        Long signals are cut into overlapping chunks, enhanced independently and cross-faded, so
        memory stays flat in the length. Chunks are grouped by padded frame count (a multiple of
        64), so every chunk meets the network at the size it would have alone: a batch changes the
        speed, not the result.
        """
        at_model_rate = [
            torch.from_numpy(resample(r.numpy(), sample_rate, self.sample_rate)) for r in rows
        ]
        chunk = round(self.chunk_seconds * self.sample_rate)
        overlap = round(CROSSFADE_SECONDS * self.sample_rate)
        pieces = [  # (row, offset, chunk index, samples)
            (row, offset, k, wave[offset : offset + chunk])
            for row, wave in enumerate(at_model_rate)
            for k, offset in enumerate(chunk_offsets(wave.shape[-1], chunk, overlap))
        ]
        buckets: dict[int, list[int]] = {}
        for p, piece in enumerate(pieces):
            buckets.setdefault(self._padded_frames(piece[3].shape[-1]), []).append(p)
        outputs = [torch.zeros_like(w) for w in at_model_rate]
        keys = [(seed, r) for r in range(len(rows))] if isinstance(seed, int) else seed
        for members in buckets.values():
            for start in range(0, len(members), self.batch_size):
                batch = [pieces[p] for p in members[start : start + self.batch_size]]
                generators = None  # one per piece, seeded by (seed, row, chunk): batching-proof
                if keys is not None:
                    generators = [
                        torch.Generator(self.device).manual_seed(hash((*keys[r], k)) & 0x7FFFFFFF)
                        for r, _, k, _ in batch
                    ]
                outs = self._enhance_batch([piece[3] for piece in batch], settings, generators)
                for (row, offset, k, _), out in zip(batch, outs):
                    last = offset + chunk >= at_model_rate[row].shape[-1]
                    outputs[row][offset : offset + out.shape[-1]] += crossfade(
                        out, overlap, k, last
                    )
        return [
            _fit_length(
                torch.from_numpy(resample(out.numpy(), self.sample_rate, sample_rate)),
                row.shape[-1],
            )
            for out, row in zip(outputs, rows)
        ]

    def _padded_frames(self, num_samples: int) -> int:
        frames = num_frames(max(num_samples, self.config.spec.n_fft), self.config.spec)
        return -(-frames // self.config.spec.frame_multiple) * self.config.spec.frame_multiple

    @torch.inference_mode()
    def _enhance_batch(
        self, waves: list[torch.Tensor], settings: SamplerConfig, generator: GeneratorArg
    ) -> list[torch.Tensor]:
        """Same-bucket mono signals -> enhanced; each is analysed alone, then frame-padded."""
        n_fft = self.config.spec.n_fft
        scales = [max(float(w.abs().max()), 1e-8) for w in waves]  # SGMSE+ peak normalisation
        # at least n_fft samples, so the centred STFT's reflection padding is defined
        lengths = [max(w.shape[-1], n_fft) for w in waves]
        specs = [
            self.spectrogram.analyse(
                torch.nn.functional.pad(w / s, (0, n - w.shape[-1]))[None].to(self.device)
            )
            for w, s, n in zip(waves, scales, lengths)
        ]  # each (1, 1, F, T_i)
        padded = self._padded_frames(max(lengths))
        y = torch.cat([torch.nn.functional.pad(s, (0, padded - s.shape[-1])) for s in specs])
        frames = torch.tensor([s.shape[-1] for s in specs], device=self.device)  # valid (B,)
        bf16 = self.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            x = enhance_spectrogram(
                self.model, y, settings, settings.mode, lengths=frames, generator=generator
            )  # (B, 1, F, T') complex64: the models return complex spectrograms in float32
        return [
            self.spectrogram.synthesise(x[i : i + 1, ..., : int(frames[i])], n)[0, : w.shape[-1]]
            .cpu()
            .mul(s)
            for i, (w, s, n) in enumerate(zip(waves, scales, lengths))
        ]


def check_atten_lim(atten_lim_db: float | None) -> None:
    if atten_lim_db is not None and not (atten_lim_db > 0 and np.isfinite(atten_lim_db)):
        raise ValueError(f"atten_lim_db must be a positive number of dB, got {atten_lim_db!r}")


def limit_attenuation(enhanced, noisy, atten_lim_db: float):
    """Mix the input back in: ``enhanced + 10^(-L/20)·(noisy − enhanced)`` (arrays or tensors).

    Where the enhancer removed everything, the output is the input attenuated by exactly L dB;
    where it recovered the clean speech, the noise is attenuated by L dB and the speech kept. A
    limit trades residual noise for fewer artefacts (DeepFilterNet's ``--atten-lim-db``).
    """
    check_atten_lim(atten_lim_db)
    keep = 10.0 ** (-atten_lim_db / 20.0)
    return enhanced + keep * (noisy - enhanced)


def chunk_offsets(length: int, chunk: int, overlap: int) -> list[int]:
    """Start offsets of chunks of ``chunk`` samples overlapping by ``overlap`` that cover length."""
    if length <= chunk:
        return [0]
    step = chunk - overlap
    count = -(-(length - overlap) // step)
    return [k * step for k in range(count)]


def crossfade(piece: torch.Tensor, overlap: int, index: int, last: bool) -> torch.Tensor:
    """Weight a chunk by linear fades over its overlaps; neighbouring weights sum to one."""
    weights = torch.ones_like(piece)
    ramp = torch.linspace(0, 1, overlap + 2, dtype=piece.dtype)[1:-1]  # (overlap,), no 0 or 1
    n = min(overlap, piece.shape[-1])
    if index > 0:
        weights[:n] = ramp[:n]
    if not last:
        weights[-overlap:] = ramp.flip(0)
    return piece * weights


def _fit_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Trim or zero-pad the last axis to ``length`` (resampling can be off by a sample)."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]))
