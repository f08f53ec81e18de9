import numpy as np
import pytest
import torch

from audiodiff import Enhancer
from audiodiff.audio import read_audio
from audiodiff.enhance import limit_attenuation

DATA = __import__("pathlib").Path(__file__).parent / "data" / "pairs"


@pytest.fixture(scope="module")
def enhancer(tiny_model_dir):
    return Enhancer.from_pretrained(tiny_model_dir, device="cpu")


@pytest.fixture(scope="module")
def noisy():
    audio, rate = read_audio(DATA / "noisy" / "p287_001.wav")
    return audio[0, :16000], rate  # 1 s


def test_numpy_mono_same_type_shape(enhancer, noisy):
    wave, rate = noisy
    out = enhancer(wave, rate, seed=0, steps=2)
    assert isinstance(out, np.ndarray) and out.shape == wave.shape and out.dtype == wave.dtype
    assert np.isfinite(out).all() and np.abs(out).max() > 0


def test_torch_multichannel_and_other_rate(enhancer, noisy):
    wave, rate = noisy
    stereo = torch.from_numpy(np.stack([wave, 0.5 * wave])).double()
    resampled = torch.from_numpy(np.interp(np.arange(8000) * 2.0, np.arange(16000), wave)[None])
    out = enhancer(stereo, rate, seed=0, steps=2)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 16000) and out.dtype == torch.float64
    out8k = enhancer(resampled.float(), 8000, seed=0, steps=2)
    assert out8k.shape == (1, 8000) and out8k.dtype == torch.float32


def test_list_input_is_batched_and_reproducible(enhancer, noisy):
    wave, rate = noisy
    items = [wave, wave[:9000], wave[:5000]]
    first = enhancer(items, rate, seed=3, steps=2)
    second = enhancer(items, rate, seed=3, steps=2)
    assert [o.shape for o in first] == [i.shape for i in items]
    for a, b in zip(first, second):
        assert np.array_equal(a, b)
    other = enhancer(items, rate, seed=4, steps=2)
    assert not np.array_equal(first[0], other[0])


def test_peak_normalisation_is_undone(enhancer, noisy):
    wave, rate = noisy
    # the pipeline divides by peak |y| and multiplies back, so the output scales with the input
    quiet = enhancer(0.1 * wave, rate, seed=0, steps=2)
    loud = enhancer(wave, rate, seed=0, steps=2)
    assert np.allclose(10 * quiet, loud, atol=1e-4 * np.abs(loud).max())


def test_very_short_and_silent_inputs(enhancer):
    assert enhancer(np.zeros(1, np.float32), 16000, steps=1).shape == (1,)
    silent = enhancer(np.zeros(3000, np.float32), 16000, steps=1)
    assert np.isfinite(silent).all()


@pytest.mark.parametrize("sampler", ["ode_euler", "ode_heun"])
def test_ode_samplers_run(enhancer, noisy, sampler):
    wave, rate = noisy
    out = enhancer(wave[:4000], rate, steps=2, method=sampler)
    assert out.shape == (4000,) and np.isfinite(out).all()


class OracleScore(torch.nn.Module):
    """The exact score of the OUVE marginal when the clean spectrogram x0 is known."""

    def __init__(self, x0: torch.Tensor):
        super().__init__()
        from audiodiff.sdes import OUVESDE

        self.sde, self.x0 = OUVESDE(), x0

    def forward(self, x, cond, t):
        x0 = torch.nn.functional.pad(self.x0, (0, x.shape[-1] - self.x0.shape[-1]))
        mean, std = self.sde.marginal_prob(x0, cond, t)
        return -(x - mean) / std[:, None, None, None] ** 2


def test_pipeline_with_the_exact_score_recovers_the_clean_signal():
    # end to end: normalisation, STFT, padding, PC sampler, iSTFT and rescaling all have to be right
    from audiodiff.config import ModelConfig, SamplerConfig
    from audiodiff.metrics import si_sdr
    from audiodiff.spec import Spectrogram

    clean, rate = read_audio(DATA / "clean" / "p287_002.wav")
    noisy, _ = read_audio(DATA / "noisy" / "p287_002.wav")
    x0 = Spectrogram().analyse(torch.from_numpy(clean / np.abs(noisy).max()))
    enhancer = Enhancer(OracleScore(x0), ModelConfig(sampler=SamplerConfig(steps=30)))
    out = enhancer(noisy[0], rate, seed=0)
    assert si_sdr(clean[0], noisy[0]) < 10
    assert si_sdr(clean[0], out) > 40


def test_batch_of_8_equals_one_at_a_time(tiny_model_dir, noisy):
    # Per-item generators, per-item STFTs and same-size buckets make batching invisible to the
    # maths. oneDNN picks batch-size-dependent conv kernels (rounding ~1e-7), so bit-exactness is
    # checked with it off, and closeness with the default kernels.
    wave, rate = noisy
    items = [wave[: 4000 + 700 * k] for k in range(8)]  # different lengths, shared 64-frame bucket
    batched = Enhancer.from_pretrained(tiny_model_dir, device="cpu", batch_size=8)
    single = Enhancer.from_pretrained(tiny_model_dir, device="cpu", batch_size=1)
    settings = {"seed": 7, "steps": 1, "corrector_steps": 0}
    with torch.backends.mkldnn.flags(enabled=False):
        together, alone = batched(items, rate, **settings), single(items, rate, **settings)
    for a, b in zip(together, alone):
        assert np.array_equal(a, b), float(np.abs(a - b).max())
    together, alone = batched(items, rate, **settings), single(items, rate, **settings)
    for a, b in zip(together, alone):
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


@pytest.mark.parametrize("seconds", [3.0, 25.0])
def test_chunked_long_signals_cross_fade_back_to_the_input(seconds):
    from dataclasses import replace

    from audiodiff.config import ModelConfig
    from audiodiff.enhance import chunk_offsets
    from audiodiff.nets import PRESETS

    net = replace(PRESETS["ncsnpp_tiny"], in_channels=2, time_conditional=False)
    config = ModelConfig(kind="predictive", backbone=None, predictor=net)
    enhancer = Enhancer(torch.nn.Identity(), config, chunk_seconds=4.0)  # Ŷ = y
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    wave[40000:60000] *= 8  # loudness changes across chunk boundaries
    out = enhancer(wave, 16000)
    assert np.abs(out - wave).max() < 1e-4 * np.abs(wave).max()
    offsets = chunk_offsets(len(wave), 64000, 8000)
    assert len(offsets) == (1 if seconds < 4 else 7) and offsets[-1] + 64000 >= len(wave)


def test_bf16_precision_runs_the_networks_under_autocast(noisy):
    from dataclasses import replace

    from audiodiff.bench.measure import randomise_
    from audiodiff.checkpoint import build_model
    from audiodiff.config import ModelConfig, SamplerConfig
    from audiodiff.nets import PRESETS

    micro = replace(PRESETS["ncsnpp_tiny"], nf=8, ch_mult=(1, 1, 2, 2))
    config = ModelConfig(backbone=micro, sampler=SamplerConfig(steps=1, corrector_steps=0))
    model = build_model(config)
    randomise_(model)  # the init's zeroed output layers would make both outputs trivial
    wave, rate = noisy[0][:4000], noisy[1]
    fp32 = Enhancer(model, config, device="cpu")(wave, rate, seed=0)
    bf16 = Enhancer(model, config, device="cpu", precision="bf16")(wave, rate, seed=0)
    assert bf16.dtype == fp32.dtype == wave.dtype and bf16.shape == wave.shape
    error = np.abs(bf16 - fp32).max() / np.abs(fp32).max()
    assert 0 < error < 0.05, error  # changed by bf16 rounding, and only by that
    with pytest.raises(ValueError, match="precision"):
        Enhancer(model, config, device="cpu", precision="fp16")


def test_attenuation_limit_mixes_the_input_back_in(enhancer, noisy):
    wave, rate = noisy
    stereo = np.stack([wave, 0.5 * wave])
    free = enhancer(stereo, rate, seed=0, steps=2)
    limited = enhancer(stereo, rate, seed=0, steps=2, atten_lim_db=12.0)
    keep = 10 ** (-12 / 20)
    np.testing.assert_allclose(limited, free + keep * (stereo - free), atol=1e-6)
    # an enhancer that removes everything leaves the input exactly 12 dB down
    silent = limit_attenuation(torch.zeros(100), torch.from_numpy(wave[:100]), 12.0)
    np.testing.assert_allclose(20 * np.log10(np.abs(wave[:100]).sum() / silent.abs().sum()), 12)
    for bad in (0.0, -3.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="atten_lim_db must be a positive number"):
            enhancer(wave, rate, steps=1, atten_lim_db=bad)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True])
def test_a_batch_size_that_is_not_a_positive_whole_number_is_refused(batch_size):
    from dataclasses import replace

    from audiodiff.config import ModelConfig
    from audiodiff.nets import PRESETS

    net = replace(PRESETS["ncsnpp_tiny"], in_channels=2, time_conditional=False)
    config = ModelConfig(kind="predictive", backbone=None, predictor=net)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1"):
        Enhancer(torch.nn.Identity(), config, batch_size=batch_size)
