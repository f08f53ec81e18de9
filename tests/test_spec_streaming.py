import pytest
import torch

from audiodiff.spec import SpecConfig, Spectrogram, decompress, make_window
from audiodiff.spec_streaming import StreamingAnalyser, StreamingSTFT, StreamingSynthesiser

BLOCKS = [1, 17, 128, 4096, "random"]
DEFAULT = SpecConfig()
PAD = DEFAULT.n_fft // 2  # 255
HOP = DEFAULT.hop_length  # 128


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def speechish(batch: int, length: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """(batch, length) harmonic tone plus noise, amplitude ~0.5."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / 16000
    f0 = 120 + 40 * torch.rand(batch, 1, generator=gen, dtype=torch.float64)  # (B, 1)
    tone = sum(torch.sin(2 * torch.pi * f0 * k * t) / k for k in range(1, 15))  # (B, L)
    noise = torch.randn(batch, length, generator=gen, dtype=torch.float64)
    return (0.2 * tone + 0.05 * noise).to(dtype)


def schedule(total: int, block, seed: int = 0) -> list[int]:
    """Block sizes summing to ``total``: fixed, or random in [0, 700] (zeros included)."""
    if block != "random":
        return [min(block, total - start) for start in range(0, total, block)]
    gen = torch.Generator().manual_seed(seed)
    sizes, done = [], 0
    while done < total:
        size = min(int(torch.randint(0, 701, (1,), generator=gen)), total - done)
        sizes.append(size)
        done += size
    return sizes


def chunks(x: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Split the last axis of ``x`` into consecutive pieces of the given sizes."""
    return list(torch.split(x, sizes, dim=-1))


def stream_analyse(x, block, config=DEFAULT, seed=0):
    analyser = StreamingAnalyser(config, batch=x.shape[0])
    frames = [analyser.push(piece) for piece in chunks(x, schedule(x.shape[-1], block, seed))]
    return torch.cat(frames + [analyser.flush()], dim=-1)


def stream_synthesise(spec, block, length, config=DEFAULT, seed=0):
    synth = StreamingSynthesiser(config, batch=spec.shape[0])
    pieces = chunks(spec, schedule(spec.shape[-1], block, seed))
    return torch.cat([synth.push(p) for p in pieces] + [synth.flush(length)], dim=-1)


def stream_chain(x, block, chain, seed=0):
    pieces = chunks(x, schedule(x.shape[-1], block, seed))
    outs = []
    for piece in pieces:
        out = chain.push(piece)
        assert out.shape == piece.shape  # one sample out per sample in
        outs.append(out)
    return torch.cat(outs + [chain.flush()], dim=-1)


# 1. analyser == offline Spectrogram.analyse, every frame (the start reflection is reproduced)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("block", BLOCKS)
def test_analyser_equals_offline(block, dtype):
    x = speechish(1, 9001, dtype=dtype)
    expected = Spectrogram(DEFAULT).analyse(x)
    frames = stream_analyse(x, block)
    assert frames.shape == expected.shape and frames.dtype == expected.dtype
    scale = expected.abs().max()
    assert (frames - expected).abs().max() <= 1e-6 * scale


@pytest.mark.parametrize("length", [PAD + 1, PAD + 2, 383, 384, 510, 511, 1280, 1281])
@pytest.mark.parametrize("window", ["hann", "sqrthann"])
def test_analyser_equals_offline_at_boundary_lengths(length, window):
    config = SpecConfig(window=window)
    x = speechish(1, length, seed=length)
    expected = Spectrogram(config).analyse(x)
    for block in (1, "random"):
        frames = stream_analyse(x, block, config)
        assert frames.shape == expected.shape
        assert (frames - expected).abs().max() <= 1e-6 * expected.abs().max()


@pytest.mark.parametrize("length", [3001, 3072])
@pytest.mark.parametrize(
    ("n_fft", "hop"), [(512, 256), (511, 100), (400, 160), (64, 64), (64, 48), (32, 31)]
)
def test_analyser_equals_offline_other_configs(n_fft, hop, length):
    # hop >= n_fft / 2: the buffer must outlive the next frame's needs for the right reflection
    config = SpecConfig(n_fft=n_fft, hop_length=hop, window="sqrthann")
    x = speechish(2, length)
    expected = Spectrogram(config).analyse(x)
    frames = stream_analyse(x, "random", config)
    assert frames.shape == expected.shape
    assert (frames - expected).abs().max() <= 1e-6 * expected.abs().max()


def test_too_short_stream_refuses_like_offline():
    x = speechish(1, PAD)
    with pytest.raises(RuntimeError):
        Spectrogram(DEFAULT).analyse(x)  # torch.stft: reflect pad must be shorter than input
    analyser = StreamingAnalyser(DEFAULT)
    assert analyser.push(x).shape == (1, 1, 256, 0)
    with pytest.raises(ValueError, match="too short"):
        analyser.flush()
    assert StreamingAnalyser(DEFAULT).flush().shape == (1, 1, 256, 0)  # empty stream


# 2. synthesiser == offline Spectrogram.synthesise


@pytest.mark.parametrize("window", ["hann", "sqrthann"])
@pytest.mark.parametrize("block", BLOCKS)
def test_synthesiser_equals_offline(block, window):
    config = SpecConfig(window=window)
    spec = Spectrogram(config)
    length = 9001
    frames = spec.analyse(speechish(1, length))
    frames = frames + 0.01 * torch.randn_like(frames)  # not a consistent STFT: OLA must still match
    expected = spec.synthesise(frames, length)
    out = stream_synthesise(frames, block, length, config)
    assert out.shape == expected.shape  # sample-aligned: no shift
    assert (out - expected).abs().max() <= 1e-6


@pytest.mark.filterwarnings("ignore:The length of signal is shorter")  # torch.istft, length 5000
def test_synthesiser_float32_and_flush_lengths():
    spec = Spectrogram(DEFAULT)
    x = speechish(1, 4000, dtype=torch.float32)
    frames = spec.analyse(x)  # 32 frames
    for length in (None, 3900, 4000, 4100, 5000):  # >= the 32·128 - 255 samples emitted
        expected = torch.istft(
            decompress(frames[:, 0], DEFAULT.alpha, DEFAULT.beta),  # (B, 1, F, T) -> (B, F, T)
            DEFAULT.n_fft,
            HOP,
            window=make_window(DEFAULT),
            center=True,
            length=length,
        )
        out = stream_synthesise(frames, "random", length)
        assert out.shape == expected.shape and out.dtype == torch.float32
        assert (out - expected).abs().max() <= 1e-6 * x.abs().max()
    synth = StreamingSynthesiser(DEFAULT)
    synth.push(frames)
    with pytest.raises(ValueError, match="shorter"):
        synth.flush(length=100)  # 32·128 - 255 samples are out already


def test_synthesiser_emits_what_is_final():
    spec = Spectrogram(DEFAULT)
    frames = spec.analyse(speechish(1, 2000))
    synth = StreamingSynthesiser(DEFAULT)
    emitted = 0
    for k in range(frames.shape[-1]):
        emitted += synth.push(frames[..., k : k + 1]).shape[-1]
        assert emitted == max(0, (k + 1) * HOP - PAD)


# 3. round trip through StreamingSTFT: input delayed by exactly latency_samples


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("window", ["hann", "sqrthann"])
def test_round_trip_is_pure_delay(window, dtype):
    chain = StreamingSTFT(SpecConfig(window=window), batch=1)
    delay = chain.latency_samples
    x = speechish(1, 9001, seed=3, dtype=dtype)
    for block, seed in (("random", 1), ("random", 2), (1, 0)):
        y = stream_chain(x, block, chain, seed)
        assert y.shape == (1, x.shape[-1] + delay) and y.dtype == dtype
        assert torch.equal(y[:, :delay], torch.zeros_like(y[:, :delay]))
        assert (y[:, delay:] - x).abs().max() <= 1e-6  # sample for sample, after the delay
        # one sample less or more of delay is clearly wrong
        assert (y[:, delay - 1 : -1] - x).abs().max() > 1e-2
        assert (y[:, delay + 1 :] - x[:, :-1]).abs().max() > 1e-2


def test_processing_callback_is_applied():
    def process(frames):
        calls.append(frames.shape[-1])
        return 0.5 * frames

    calls = []
    chain = StreamingSTFT(DEFAULT, batch=1, process=process)
    x = speechish(1, 5000, seed=4)
    y = stream_chain(x, "random", chain, seed=5)
    spec = Spectrogram(DEFAULT)
    expected = spec.synthesise(0.5 * spec.analyse(x), x.shape[-1])
    assert min(calls) >= 1 and sum(calls) == expected.shape[-1] // HOP + 1
    assert (y[:, chain.latency_samples :] - expected).abs().max() <= 1e-6
    assert (expected - x).abs().max() > 0.05  # the callback changed something


# 4. batch, empty pushes, single samples


def test_batch_items_do_not_mix():
    x = speechish(2, 5000, seed=6)
    both = stream_analyse(x, "random")
    for b in range(2):
        alone = stream_analyse(x[b : b + 1], "random")
        assert torch.equal(both[b : b + 1], alone)
    chain = StreamingSTFT(DEFAULT, batch=2)
    y = stream_chain(x, 17, chain)
    for b in range(2):
        single = stream_chain(x[b : b + 1], 17, StreamingSTFT(DEFAULT, batch=1))
        assert torch.allclose(y[b : b + 1], single, rtol=0, atol=1e-12)


def test_empty_pushes_and_shape_checks():
    analyser = StreamingAnalyser(DEFAULT, batch=2)
    synth = StreamingSynthesiser(DEFAULT, batch=2)
    empty = torch.zeros(2, 0, dtype=torch.float64)
    frames = analyser.push(empty)
    assert frames.shape == (2, 1, 256, 0) and frames.dtype == torch.complex128
    assert synth.push(frames).shape == (2, 0)
    chain = StreamingSTFT(DEFAULT, batch=2)
    assert chain.push(empty).shape == (2, 0)
    assert chain.flush().shape == (2, 0)  # nothing in, nothing out
    with pytest.raises(ValueError, match="batch"):
        analyser.push(torch.zeros(1, 10))
    with pytest.raises(ValueError):
        synth.push(torch.zeros(2, 1, 255, 3, dtype=torch.complex64))


def test_single_sample_pushes_emit_frames_exactly_when_complete():
    x = speechish(1, 1200)
    analyser = StreamingAnalyser(DEFAULT)
    arrivals = []  # frame index -> input sample whose push emitted it
    for n in range(x.shape[-1]):
        k = analyser.push(x[:, n : n + 1]).shape[-1]
        assert k <= 1
        arrivals += [n] * k
    # frame t ends at x[t·hop + n_fft - 1 - P]; frame 0 also waits for x[P] (start reflection)
    expected = [max(t * HOP + DEFAULT.n_fft - 1 - PAD, PAD) for t in range(len(arrivals))]
    assert arrivals == expected
    assert arrivals[:3] == [255, 382, 510]
    assert len(arrivals) == (x.shape[-1] - 1 - 254) // HOP + 1


# 5. latency: n_fft - 1 samples, and no less


def test_documented_latency_default():
    chain = StreamingSTFT(DEFAULT)
    assert chain.latency_samples == 509 == DEFAULT.n_fft - 1
    assert chain.analyser.latency_samples == 254 and chain.synthesiser.latency_samples == 255
    assert chain.latency_ms == pytest.approx(31.8125)


@pytest.mark.parametrize(
    ("n_fft", "hop"), [(510, 128), (512, 256), (511, 100), (400, 160), (64, 48), (32, 31)]
)
def test_latency_is_the_worst_case_wait(n_fft, hop):
    """Push one sample at a time: the wait of output sample n is at most, and reaches, D."""
    config = SpecConfig(n_fft=n_fft, hop_length=hop)
    analyser, synth = StreamingAnalyser(config), StreamingSynthesiser(config)
    x = speechish(1, 4 * n_fft + 3 * hop)
    final, worst = 0, 0
    for n in range(x.shape[-1]):
        final += synth.push(analyser.push(x[:, n : n + 1])).shape[-1]
        worst = max(worst, (n + 1) - final)  # samples in but not final out
    assert worst == StreamingSTFT(config).latency_samples == n_fft - 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_cuda():
    x = speechish(2, 3000, dtype=torch.float32).cuda()
    y = stream_chain(x, "random", StreamingSTFT(DEFAULT, batch=2))
    assert y.device == x.device
    assert (y[:, 509:] - x).abs().max() <= 1e-5
