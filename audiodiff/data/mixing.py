"""Pure numpy functions that build noisy/reverberant training mixtures.

Signals are mono float arrays with time on the last axis, (L,) unless stated. Every random choice
comes from a ``numpy.random.Generator`` passed in, so a mixture is a deterministic function of the
generator's seed. Levels follow the VB-DMD / SGMSE+ convention: the SNR is global over the segment,
10·log10(Σ speech² / Σ noise²), where "speech" is the signal actually in the mixture (reverberant
speech when reverb is applied).
"""

from __future__ import annotations

import math

import numpy as np

TARGETS = ("dry", "early")
_TINY = 1e-20


def rms(x: np.ndarray) -> float:
    """Root mean square of any array (0.0 when empty), computed in float64."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def energy(x: np.ndarray) -> float:
    """Σ x² in float64."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sum(np.square(x)))


def snr_db(speech: np.ndarray, noise: np.ndarray) -> float:
    """Global SNR 10·log10(Σ speech² / Σ noise²) in dB (inf for silent noise)."""
    e_noise = energy(noise)
    if e_noise <= 0:
        return math.inf
    return 10.0 * math.log10(max(energy(speech), _TINY) / e_noise)


def mix_at_snr(
    clean: np.ndarray, noise: np.ndarray, snr_db: float
) -> tuple[np.ndarray, np.ndarray]:
    """Scale ``noise`` so that the global SNR of ``clean`` to it is ``snr_db``; add them.

    ``clean`` and ``noise`` have the same shape (..., L). Returns ``(noisy, scaled_noise)`` in
    ``clean``'s float dtype, ``noisy = clean + scaled_noise``. The scale is computed in float64, so
    the realised SNR matches the request to far better than 0.01 dB. Raises ValueError for shape
    mismatch or an all-zero clean or noise signal (the SNR would be undefined).
    """
    clean = np.asarray(clean)
    noise = np.asarray(noise)
    if clean.shape != noise.shape:
        raise ValueError(f"clean {clean.shape} and noise {noise.shape} must have the same shape")
    e_clean, e_noise = energy(clean), energy(noise)
    if e_clean <= 0 or e_noise <= 0:
        raise ValueError("cannot mix at an SNR: clean or noise is all zeros")
    scale = math.sqrt(e_clean / (e_noise * 10.0 ** (snr_db / 10.0)))
    dtype = clean.dtype if np.issubdtype(clean.dtype, np.floating) else np.float32
    scaled = (noise.astype(np.float64) * scale).astype(dtype)
    noisy = (clean.astype(np.float64) + scaled.astype(np.float64)).astype(dtype)
    return noisy, scaled


def apply_gain_db(x: np.ndarray, gain_db: float) -> np.ndarray:
    """Multiply by 10^(gain_db / 20), keeping the dtype."""
    x = np.asarray(x)
    return (x * 10.0 ** (gain_db / 20.0)).astype(x.dtype, copy=False)


def random_offset(n: int, length: int, rng: np.random.Generator) -> int:
    """A uniformly drawn start: in [0, n - length] when n >= length, else in [0, n) (for looping).

    Always draws exactly one number from ``rng`` so the generator's stream stays aligned.
    """
    if n <= 0 or length <= 0:
        raise ValueError(f"need positive lengths, got n={n}, length={length}")
    high = n - length + 1 if n >= length else n
    return int(rng.integers(0, high))


def loop_crop(x: np.ndarray, length: int, offset: int) -> np.ndarray:
    """``length`` samples of ``x`` (L,) from ``offset``, looping ``x`` end-to-start as needed."""
    n = x.shape[-1]
    if offset + length <= n:
        return x[..., offset : offset + length].copy()
    reps = -(-(offset + length) // n)  # ceil
    return np.tile(x, reps)[..., offset : offset + length].copy()


def fit_noise(noise: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Crop (long noise) or loop (short noise) ``noise`` (L,) to ``length`` at a random offset."""
    return loop_crop(noise, length, random_offset(noise.shape[-1], length, rng))


def loudest_offset(x: np.ndarray, length: int) -> int:
    """Start of the ``length``-sample window of ``x`` (L,) with the most energy (0 if shorter)."""
    n = x.shape[-1]
    if n <= length:
        return 0
    csum = np.concatenate([[0.0], np.cumsum(np.square(x, dtype=np.float64))])
    return int(np.argmax(csum[length:] - csum[:-length]))


def segment(x: np.ndarray, start: int, stop: int) -> np.ndarray:
    """``x[start:stop]`` (L,) with zeros where the range falls outside ``x`` (start may be < 0)."""
    n = x.shape[-1]
    out = np.zeros(stop - start, dtype=x.dtype)
    lo, hi = max(start, 0), min(stop, n)
    if hi > lo:
        out[lo - start : hi - start] = x[lo:hi]
    return out


def _convolve_aligned(x: np.ndarray, h: np.ndarray, shift: int) -> np.ndarray:
    """Full FFT convolution of x (..., L) with h (M,), samples [shift, shift + L); float64."""
    length = x.shape[-1]
    n = length + h.shape[-1] - 1
    nfft = 1 << (n - 1).bit_length()
    spectrum = np.fft.rfft(x, nfft) * np.fft.rfft(h, nfft)
    return np.fft.irfft(spectrum, nfft)[..., shift : shift + length]


def reverberate(
    clean: np.ndarray,
    rir: np.ndarray,
    target: str = "dry",
    early_ms: float = 50.0,
    sample_rate: int = 16000,
) -> tuple[np.ndarray, np.ndarray]:
    """Convolve ``clean`` (..., L) with ``rir`` (M,); returns (reverberant, target), both (..., L).

    The RIR's largest-magnitude tap is the direct path: it defines time 0 (the output is advanced
    by its index, so nothing is delayed against ``clean``) and the RIR is divided by its signed
    value (direct path gain +1). ``target="dry"`` returns ``clean`` itself; ``"early"`` returns
    ``clean`` convolved with the RIR up to ``early_ms`` after the direct path (taps before it, the
    onset, included), aligned exactly like the reverberant signal. Samples before the input are
    taken as zero; pass extra leading context and slice it off to get a tail from earlier speech.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if early_ms < 0:
        raise ValueError(f"early_ms must be >= 0, got {early_ms}")
    clean = np.asarray(clean)
    dtype = clean.dtype if np.issubdtype(clean.dtype, np.floating) else np.float32
    h = np.asarray(rir, dtype=np.float64).reshape(-1)
    if h.size == 0 or not np.any(h):
        raise ValueError("the RIR is empty or all zeros")
    peak = int(np.argmax(np.abs(h)))
    h = h / h[peak]
    x = clean.astype(np.float64)
    reverberant = _convolve_aligned(x, h, peak).astype(dtype)
    if target == "dry":
        return reverberant, clean.astype(dtype, copy=True)
    early_taps = max(1, int(round(early_ms * sample_rate / 1000.0)))
    early = _convolve_aligned(x, h[: peak + early_taps], peak).astype(dtype)
    return reverberant, early


def ddsp_rir(rt60_s: float, drr_db: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A DDSP exponential-decay RIR (M,) float32, M = RT60·rate taps (tail 60 dB down at the end).

    Wraps :func:`audiodiff.ddsp.reverb.exponential_decay_ir`: unit direct path at tap 0, a
    Gaussian-noise tail decaying 60 dB in ``rt60_s``, scaled to direct-to-reverberant ratio
    ``drr_db``; the noise is seeded by ``seed``.
    """
    from audiodiff.ddsp.reverb import exponential_decay_ir

    if rt60_s <= 0:
        raise ValueError(f"rt60_s must be positive, got {rt60_s}")
    n_taps = max(2, int(round(rt60_s * sample_rate)))
    ir = exponential_decay_ir(float(rt60_s), float(drr_db), n_taps, sample_rate, int(seed))
    return ir[0].numpy().astype(np.float32)


def random_ddsp_rir(
    rng: np.random.Generator,
    rt60_s: tuple[float, float] = (0.2, 0.8),
    drr_db: tuple[float, float] = (0.0, 10.0),
    sample_rate: int = 16000,
) -> tuple[np.ndarray, float, float]:
    """Draw RT60 and DRR uniformly from their ranges and a noise seed; returns (rir, rt60, drr)."""
    rt60 = float(rng.uniform(*rt60_s))
    drr = float(rng.uniform(*drr_db))
    seed = int(rng.integers(0, 2**31 - 1))
    return ddsp_rir(rt60, drr, sample_rate, seed), rt60, drr


def estimate_rt60(rir: np.ndarray, sample_rate: int) -> float:
    """RT60 by Schroeder backward integration (T20: −5 to −25 dB ×3; T10 fallback); nan if short."""
    h = np.asarray(rir, dtype=np.float64).reshape(-1)
    if h.size == 0 or not np.any(h):
        return math.nan
    h = h[int(np.argmax(np.abs(h))) :]
    edc = np.cumsum(np.square(h)[::-1])[::-1]
    edc_db = 10.0 * np.log10(np.maximum(edc / edc[0], _TINY))
    for lo, hi, factor in ((-5.0, -25.0, 3.0), (-5.0, -15.0, 6.0)):
        below_lo, below_hi = np.nonzero(edc_db <= lo)[0], np.nonzero(edc_db <= hi)[0]
        if below_lo.size and below_hi.size and below_hi[0] > below_lo[0]:
            return float(factor * (below_hi[0] - below_lo[0]) / sample_rate)
    return math.nan
