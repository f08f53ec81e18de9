"""Block-online enhancement: offline agreement, causality, latency, late blocks, cost, seeds.

Quality is checked with an *oracle* StoRM whose output means something without training (an
untrained network's SI-SDR does not): its predictor applies a weak ideal ratio mask and its score
is the exact score of the forward SDE started at the ideally masked spectrogram. It finds the
mask of each frame it is given by matching the frame against the offline noisy frames (gain and
position blind), so a stream that keeps the wrong frames, loses or repeats a block, misplaces the
look-ahead or breaks the synthesis scores far below offline (the shift control shows by how
much). The NCSN++ paths (windowing, padding, per-frame times) run on a micro network.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from audiodiff.audio import read_audio
from audiodiff.checkpoint import build_model
from audiodiff.config import ModelConfig, SamplerConfig
from audiodiff.enhance import Enhancer
from audiodiff.metrics import si_sdr
from audiodiff.models import StoRM
from audiodiff.nets import PRESETS
from audiodiff.sdes import OUVESDE
from audiodiff.spec import Spectrogram
from audiodiff.streaming import RealtimeEnhancer, frame_score, frames_for_latency

PAIRS = Path(__file__).parent / "data" / "pairs"
MICRO = replace(PRESETS["ncsnpp_tiny"], nf=8, ch_mult=(1, 2), num_res_blocks=1)
STEPS = 4


def storm_config(net=MICRO, steps=STEPS) -> ModelConfig:
    return ModelConfig(
        kind="storm",
        backbone=replace(net, in_channels=6),
        predictor=replace(net, in_channels=2, time_conditional=False),
        sampler=SamplerConfig(steps=steps, corrector_steps=0),
    )


def stream(rt: RealtimeEnhancer, x: np.ndarray, chunk: int = 700) -> np.ndarray:
    """The whole stream through ``rt`` in chunks, realigned with the input: (L,)."""
    pieces = [rt.push(x[i : i + chunk]) for i in range(0, len(x), chunk)]
    out = np.concatenate(pieces + [rt.flush()])
    assert out.shape == (len(x) + rt.latency_samples,)
    return out[rt.latency_samples :]


class OracleMask(nn.Module):
    """Ŷ = M^p·y, M = min(|X0|/|Y|, 1) the ideal ratio mask of the offline frame y matches."""

    def __init__(self, clean: torch.Tensor, noisy: torch.Tensor, power: float):
        super().__init__()  # clean, noisy: (F, T) compressed spectrograms of the whole file
        self.bank = noisy / noisy.abs().square().sum(0).sqrt().clamp_min(1e-12)
        self.mask = (clean.abs() / noisy.abs().clamp_min(1e-12)).clamp(max=1) ** power

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """(B, 1, F, W) -> (B, 1, F, W); zero (padding) or unknown frames get mask 0."""
        frames = y[:, 0].transpose(1, 2)  # (B, W, F)
        corr = (frames.conj() @ self.bank).abs()  # (B, W, T): |<y, bank_t>|, bank unit-norm
        norm = frames.abs().square().sum(-1).sqrt()  # (B, W)
        found = (corr.amax(-1) > 0.999 * norm) & (norm > 1e-6)
        mask = self.mask[:, corr.argmax(-1)].permute(1, 0, 2) * found[:, None]  # (B, F, W)
        return mask.unsqueeze(1) * y


class OracleScore(nn.Module):
    """The exact score -(x - μ_t)/σ_t² of the OUVE SDE started at x0 = ideal-mask(y)."""

    def __init__(self, oracle: OracleMask, sde: OUVESDE):
        super().__init__()
        self.oracle, self.sde = oracle, sde

    def frame_score(self, x, cond, t):
        """x: (B, 1, F, W), cond: [y, mean target] (B, 2, F, W), t: (B, W) -> (B, 1, F, W)."""
        x0, target = self.oracle(cond[:, :1]), cond[:, -1:]
        decay = torch.exp(-self.sde.theta * t)[:, None, None, :]
        mean = decay * x0 + (1 - decay) * target
        return -(x - mean) / self.sde.marginal_std(t)[:, None, None, :] ** 2

    def forward(self, x, cond, t):
        return self.frame_score(x, cond, t[:, None].expand(-1, x.shape[-1]))


@pytest.fixture(scope="module")
def pair():
    clean, _ = read_audio(PAIRS / "clean" / "p287_001.wav")
    noisy, _ = read_audio(PAIRS / "noisy" / "p287_001.wav")
    return clean[0], noisy[0]


@pytest.fixture(scope="module")
def oracle(pair):
    config = storm_config()
    spec = Spectrogram(config.spec)
    clean, noisy = (spec.analyse(torch.from_numpy(x)[None])[0, 0] for x in pair)
    ideal = OracleMask(clean, noisy, power=1.0)
    return StoRM(OracleMask(clean, noisy, power=0.1), OracleScore(ideal, OUVESDE())), config


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return build_model(storm_config()).eval(), storm_config()


@pytest.mark.parametrize("mode", ["predictive", "storm", "diffusion"])
def test_streamed_real_pair_within_1_db_of_offline(pair, oracle, mode):
    clean, noisy = pair
    model, config = oracle
    offline_mode = "predictive" if mode == "predictive" else "storm"
    offline = Enhancer(model, config)(noisy, 16000, mode=offline_mode, seed=0)
    rt = RealtimeEnhancer(
        model, config, mode=mode, block_frames=4, context_frames=8, lookahead_frames=2, seed=0
    )
    streamed = stream(rt, noisy)
    base, ref, got = si_sdr(clean, noisy), si_sdr(clean, offline), si_sdr(clean, streamed)
    assert ref > base + 1.5, (base, ref)  # the oracle model does enhance
    assert abs(got - ref) < 1.0, (ref, got)
    assert si_sdr(clean, np.roll(streamed, 128)) < ref - 10  # one hop off would fail
    level = 10 * np.log10(np.sum(streamed**2) / np.sum(offline**2))
    assert abs(level) < 0.5  # SI-SDR is blind to the gain the stream has to undo
    if mode == "predictive":  # deterministic and frame-local: the same samples
        np.testing.assert_allclose(streamed, offline, atol=1e-5)


def test_storm_modes_improve_on_the_predictor(pair, oracle):
    clean, noisy = pair
    outs = {
        mode: stream(RealtimeEnhancer(oracle[0], oracle[1], mode=mode, block_frames=4), noisy)
        for mode in ("predictive", "diffusion")
    }
    assert si_sdr(clean, outs["diffusion"]) > si_sdr(clean, outs["predictive"]) + 0.5


@pytest.mark.parametrize("mode", ["predictive", "diffusion"])
def test_future_input_beyond_the_lookahead_does_not_change_past_output(micro, pair, mode):
    model, config = micro
    x = pair[1][:6000].copy()
    cut = 3100
    other = x.copy()
    other[cut:] = 0.9 * np.sign(np.sin(np.arange(6000 - cut)))  # louder: the gain changes too
    kwargs = dict(mode=mode, block_frames=4, context_frames=4, lookahead_frames=2, steps=2)
    outs = []
    for signal in (x, other):
        rt = RealtimeEnhancer(model, config, **kwargs)
        pieces = [rt.push(signal[i : i + 2500]) for i in range(0, len(signal), 2500)]
        outs.append(np.concatenate(pieces + [rt.flush()]))
    # output index i is input index i - latency: everything before the change is identical
    np.testing.assert_array_equal(outs[0][:cut], outs[1][:cut])
    assert not np.allclose(outs[0][cut:], outs[1][cut:])


@pytest.mark.parametrize(
    "block, lookahead, mode, steps",
    [(1, 0, "passthrough", 1), (4, 2, "predictive", 1), (8, 3, "storm", 3), (4, 1, "diffusion", 3)],
)
def test_latency_formula_is_exact_and_tight(oracle, block, lookahead, mode, steps):
    model, config = oracle
    kwargs = dict(mode=mode, block_frames=block, lookahead_frames=lookahead, steps=steps)
    rt = RealtimeEnhancer(model, config, **kwargs)
    buffered = (steps - 1) * block if mode == "diffusion" else 0
    samples = 509 + (block - 1 + lookahead + buffered) * 128
    assert rt.latency_samples == samples
    assert rt.latency_ms == pytest.approx(samples / 16.0)
    x = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    if mode == "passthrough":  # the STFT round trip: exactly the input, delayed
        np.testing.assert_allclose(stream(rt, x, chunk=333), x, atol=1e-6)

    class TooEager(RealtimeEnhancer):
        latency_samples = samples - 1

    eager = TooEager(model, config, **kwargs)
    with pytest.raises(RuntimeError, match="fell behind"):
        for sample in x:  # one sample at a time: every output is due as early as possible
            eager.push(sample[None])


def test_diffusion_buffer_runs_the_offline_sampler_per_block(oracle, pair, monkeypatch):
    """With the same noise, every block's trajectory through the staggered buffer is exactly the
    offline reverse-diffusion sampler (N steps on the grid, noise-free last step) for that block."""
    import audiodiff.sampling
    import audiodiff.streaming

    model, config = oracle
    draws = []  # per hop: z_prior, z_step, each (1, 1, F, W)

    def record(*args, **kwargs):
        draws.append(torch.randn(*args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(audiodiff.streaming, "complex_randn", record)
    peak, B, W = 0.5, 8, 44
    rt = RealtimeEnhancer(model, config, mode="diffusion", block_frames=B, steps=3, input_peak=peak)
    assert rt.window_frames == W  # 16 context + 3 blocks + 4 look-ahead, no NCSN++ multiple
    emitted = []
    push = rt.synthesiser.push
    rt.synthesiser.push = lambda frames: emitted.append(frames) or push(frames)
    stream(rt, pair[1][:3000])  # 24 frames: 3 blocks, 3 + 2 hops
    gain = peak**-config.spec.alpha
    y = Spectrogram(config.spec).analyse(torch.from_numpy(pair[1][:3000])[None]) * gain
    grid = audiodiff.sampling.time_grid(3, t_eps=config.sampler.t_eps)
    sigma_T = float(OUVESDE().marginal_std(torch.ones(1)))
    for b in range(3):
        ends = [min((h + 1) * B + 4, 24) for h in range(b, b + 3)]  # window ends, hops b..b+2

        def block(z, end, b=b):  # block b's columns of a window draw (1, 1, F, W)
            return z[..., b * B - end + W : (b + 1) * B - end + W]

        steps = iter([block(draws[2 * h + 1], end) for h, end in zip(range(b, b + 3), ends)])
        monkeypatch.setattr(audiodiff.sampling, "complex_randn", lambda *a, i=steps, **k: next(i))
        y_b = y[..., b * B : (b + 1) * B]
        m_b = model.predictor(y_b)
        x_T = m_b + sigma_T * block(draws[2 * b], ends[0])
        cond = StoRM.condition(y_b, m_b)
        expected = audiodiff.sampling.sample_pc(
            OUVESDE(),
            lambda x, _, t, c=cond: model.score(x, c, t),
            m_b,
            grid,
            corrector_steps=0,
            x_start=x_T,
        )
        torch.testing.assert_close(emitted[b] * gain, expected, rtol=1e-4, atol=1e-5)


def test_late_blocks_are_counted():
    stamps = iter([0, 0.010, 1, 1.100, 2, 2.050, 3, 3.200, 4, 4.060])  # start, end of each block
    config = storm_config()
    rt = RealtimeEnhancer(
        None, config, mode="passthrough", block_frames=8, lookahead_frames=4, clock=stamps.__next__
    )
    rt.push(np.zeros(6000, np.float32))  # 45 frames: blocks 0..4 have their look-ahead
    assert rt.stats.blocks == 5
    assert rt.stats.late_blocks == 2  # 100 and 200 ms > the 64 ms a block of 8 hops lasts
    assert rt.stats.rtf == pytest.approx([10 / 64, 100 / 64, 50 / 64, 200 / 64, 60 / 64])
    summary = rt.stats.summary()
    assert summary["late_blocks"] == 2 and summary["rtf_max"] == pytest.approx(200 / 64)


def count_calls(module: nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *_: calls.append(1))
    return calls


def test_diffusion_mode_costs_one_score_call_per_hop(pair):
    torch.manual_seed(1)
    model = build_model(storm_config()).eval()
    score_calls, predictor_calls = (
        count_calls(model.score.backbone),
        count_calls(model.predictor.backbone),
    )
    small = dict(block_frames=4, context_frames=2, lookahead_frames=2)
    rt = RealtimeEnhancer(model, storm_config(), mode="diffusion", steps=STEPS, **small)
    stream(rt, pair[1][:2500])
    entered = -(-(2500 // 128 + 1) // 4)  # 20 frames in blocks of 4
    hops = entered + STEPS - 1  # + the hops that drain the buffer at the end
    assert len(score_calls) == hops == rt.stats.blocks
    assert len(predictor_calls) == entered
    assert rt.stats.network_calls == hops + entered
    score_calls.clear()
    rt = RealtimeEnhancer(model, storm_config(), mode="storm", **small)
    rt.push(pair[1][:1600])  # 11 frames: 2 blocks with their 2 look-ahead frames
    assert rt.stats.blocks == 2 and len(score_calls) == STEPS * 2  # the sampler, every block


def test_score_only_model_streams_in_every_sampling_mode(pair):
    torch.manual_seed(0)
    config = ModelConfig(
        backbone=replace(MICRO, in_channels=4), sampler=SamplerConfig(steps=2, corrector_steps=0)
    )
    model = build_model(config).eval()
    calls = count_calls(model.backbone)
    for mode in ("score", "diffusion"):
        out = stream(RealtimeEnhancer(model, config, mode=mode, block_frames=8), pair[1][:3000])
        assert np.isfinite(out).all() and np.abs(out).max() > 0
    assert len(calls) == 2 * 3 + (3 + 1)  # score: 2 steps x 3 blocks; diffusion: 3 + 1 hops
    for mode in ("predictive", "storm"):  # as offline: a score model has no predictor
        with pytest.raises(ValueError, match=mode):
            RealtimeEnhancer(model, config, mode=mode)
    with pytest.raises(ValueError, match="storm"):
        Enhancer(model, config)(pair[1][:3000], 16000, mode="storm")


def test_diffusion_mode_honours_the_corrector_and_refuses_ode_samplers(pair):
    torch.manual_seed(0)
    settings = SamplerConfig(steps=2, corrector_steps=2)
    config = ModelConfig(backbone=replace(MICRO, in_channels=4), sampler=settings)
    model = build_model(config).eval()
    calls = count_calls(model.backbone)
    no_corrector = replace(config, sampler=replace(settings, corrector_steps=0))
    x = pair[1][:3000]
    plain = stream(RealtimeEnhancer(model, no_corrector, mode="diffusion", block_frames=8), x)
    assert len(calls) == 3 + 1  # 3 blocks + 1 draining hop, one call each
    corrected = stream(RealtimeEnhancer(model, config, mode="diffusion", block_frames=8), x)
    assert len(calls) == 4 + (1 + 2) * 4  # every hop: 2 Langevin calls, then the predictor
    assert not np.allclose(plain, corrected)
    for method in ("ode_euler", "ode_heun"):
        ode = replace(config, sampler=replace(settings, method=method))
        with pytest.raises(ValueError, match=method):
            RealtimeEnhancer(model, ode, mode="diffusion")


@pytest.mark.parametrize("mode", ["storm", "diffusion"])
def test_deterministic_under_a_seed(oracle, pair, mode):
    x = pair[1][:6000]

    def run(seed):
        return stream(RealtimeEnhancer(*oracle, mode=mode, block_frames=4, seed=seed), x)

    first = run(3)
    np.testing.assert_array_equal(first, run(3))
    assert not np.allclose(first, run(4))


def test_attenuation_limit_mixes_in_the_input_as_late_as_the_output(oracle, pair):
    x = pair[1][:6000]
    settings = {"mode": "predictive", "block_frames": 4}
    free = stream(RealtimeEnhancer(*oracle, **settings), x)
    limited = stream(RealtimeEnhancer(*oracle, **settings, atten_lim_db=9), x)
    keep = 10 ** (-9 / 20)  # stream() realigns the output with the input, flushed tail included
    np.testing.assert_allclose(limited, free + keep * (x - free), atol=1e-6)
    assert np.abs(limited - free).max() > 1e-3
    with pytest.raises(ValueError, match="atten_lim_db"):
        RealtimeEnhancer(*oracle, mode="predictive", atten_lim_db=0)


def test_per_frame_times_match_a_scalar_time_call():
    torch.manual_seed(2)
    score = build_model(storm_config()).eval().score
    with torch.no_grad():  # an untrained NCSN++ ignores t (zero-initialised residual branches)
        for param in score.parameters():
            param.add_(0.05 * torch.randn_like(param))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 256, 16, dtype=torch.complex64, generator=gen)
    cond = torch.randn(2, 2, 256, 16, dtype=torch.complex64, generator=gen)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        before = score(x, cond, t)
        framewise = frame_score(score, x, cond, t[:, None].expand(-1, 16))
        mixed = frame_score(score, x, cond, torch.linspace(0.05, 1.0, 16).expand(2, -1))
        after = score(x, cond, t)  # the hooks are inactive outside frame_score
    torch.testing.assert_close(framewise, before, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert not torch.allclose(mixed, before, rtol=1e-2)


def test_frames_for_latency_fits_the_budget():
    config = storm_config()
    for ms in (32, 50, 100, 250):
        block, lookahead = frames_for_latency(ms, config)
        rt = RealtimeEnhancer(
            None, config, mode="passthrough", block_frames=block, lookahead_frames=lookahead
        )
        assert rt.latency_ms <= ms and rt.latency_ms > ms - 8.0 * 2  # within two hops
    block, lookahead = frames_for_latency(400, config, "diffusion", steps=4)
    assert 509 + (4 * block - 1 + lookahead) * 128 <= 400 * 16
    with pytest.raises(ValueError, match="below"):
        frames_for_latency(20, config)


def test_stream_command_file_to_file(tmp_path, pair, capsys):
    import argparse

    import soundfile as sf

    from audiodiff.checkpoint import save_pretrained
    from audiodiff.stream_cli import add_stream_parser, build_enhancer

    torch.manual_seed(0)
    model_dir = save_pretrained(build_model(storm_config()), storm_config(), tmp_path / "m")
    sf.write(tmp_path / "in.wav", pair[1][:8000], 16000)
    parser = argparse.ArgumentParser()
    add_stream_parser(parser.add_subparsers(dest="command"))

    def run(*argv):
        args = parser.parse_args(["stream", "--model", str(model_dir), *argv])
        return args.func(args)

    out = tmp_path / "out.wav"
    assert run("--input", str(tmp_path / "in.wav"), "--output", str(out), "--fast",
               "--mode", "predictive", "--latency-ms", "80") == 0  # fmt: skip
    err = capsys.readouterr().err
    summary = [line for line in err.splitlines() if line.startswith("stream: ")]
    assert len(summary) == 1, err  # one final line; no live "\r" status when stderr is no terminal
    assert "\r" not in err and f"model {model_dir}, mode predictive" in summary[0]
    assert "latency 79.8 ms" in summary[0] and "RTF" in summary[0] and "late blocks" in summary[0]
    assert run("--input", str(tmp_path / "in.wav"), "--output", str(out), "--fast",
               "--mode", "predictive", "--latency-ms", "80", "--json") == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    for key in ("latency_ms", "rtf_cpu", "rtf_wall", "late_blocks", "model", "mode"):
        assert key in report, key
    assert report["mode"] == "predictive" and report["latency_ms"] == pytest.approx(79.8, abs=0.1)
    assert report["audio_seconds"] == pytest.approx(0.5) and report["rtf_cpu"] > 0
    assert 0 <= report["late_blocks"] <= report["blocks"] and report["blocks"] > 0
    enhanced, rate = sf.read(out)
    assert rate == 16000 and enhanced.shape == (8000,) and np.abs(enhanced).max() > 0
    files = ["--input", "a.wav", "--output", "b.wav", "--atten-lim-db", "12"]
    limited = parser.parse_args(["stream", "--model", str(model_dir), *files])
    assert build_enhancer(limited).atten_lim_db == 12.0
    assert run("--input", "missing.wav", "--output", str(out)) == 1  # a failed input
    assert "missing.wav" in capsys.readouterr().err
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        assert run("--input", "mic", "--output", str(out)) == 2
        assert "pip install 'audiodiff[stream]'" in capsys.readouterr().err


def test_cli_parsers_import_without_torch_and_list_the_streaming_modes():
    import subprocess
    import sys

    from audiodiff import serve, stream_cli, streaming

    assert stream_cli.MODES == streaming.MODES[:5] and serve.MODES == streaming.MODES
    code = "import sys, audiodiff.stream_cli, audiodiff.serve; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_flush_keeps_the_finished_streams_figures_and_the_next_stream_counts_afresh():
    rt = RealtimeEnhancer(None, storm_config(), mode="passthrough", block_frames=8)
    rt.push(np.zeros(6000, np.float32))
    rt.flush()
    finished = rt.stats.blocks
    assert finished > 5  # readable after flush
    rt.push(np.zeros(3000, np.float32))
    assert 0 < rt.stats.blocks < finished  # the second stream alone
