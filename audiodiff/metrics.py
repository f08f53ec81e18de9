"""Objective speech-quality metrics: PESQ-WB, ESTOI, SI-SDR, input SNR, DNSMOS, and a 95 % CI.

All signals are 1-D float arrays at one rate. The intrusive metrics compare an estimate with its
clean reference and need equal lengths (``audiodiff eval`` trims pairs within a tolerance first).
``pesq`` and ``pystoi`` are core dependencies; DNSMOS needs the ``[eval]`` extra (``speechmos``,
whose ONNX models ship inside the wheel, and ``onnxruntime``) and is skipped without it.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings

import numpy as np

from .audio import resample

METRICS = ("pesq", "estoi", "si_sdr")  # the keys compute_metrics always returns

PESQ_RATE = 16000
DNSMOS_RATE = 16000
DNSMOS_KEYS = {  # speechmos' key -> ours
    "ovrl_mos": "dnsmos_ovrl",
    "sig_mos": "dnsmos_sig",
    "bak_mos": "dnsmos_bak",
    "p808_mos": "dnsmos_p808",
}


def _pair(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-D float64 arrays of equal shape, or ValueError."""
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape or reference.ndim != 1:
        raise ValueError(f"shape mismatch: {reference.shape} vs {estimate.shape} (need equal 1-D)")
    return reference, estimate


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019) of zero-mean 1-D signals.

    SI-SDR = 10 log10(|αs|² / |αs − ŝ|²) with α = ⟨ŝ, s⟩ / |s|².
    """
    reference, estimate = _pair(reference, estimate)
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    alpha = np.dot(estimate, reference) / max(np.dot(reference, reference), 1e-12)
    target = alpha * reference
    noise = estimate - target
    return float(
        10 * np.log10(max(np.dot(target, target), 1e-12) / max(np.dot(noise, noise), 1e-12))
    )


def input_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """Global SNR of a noisy mixture in dB: 10 log10(|s|² / |y − s|²)."""
    clean, noisy = _pair(clean, noisy)
    residual = noisy - clean
    return float(
        10 * np.log10(max(np.dot(clean, clean), 1e-20) / max(np.dot(residual, residual), 1e-20))
    )


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, rate: int) -> float:
    """Wide-band PESQ (ITU-T P.862.2, MOS-LQO 1.04…4.64) with the ``pesq`` package at 16 kHz.

    Other rates are resampled to 16 kHz (soxr). Signals PESQ cannot score (silent, no utterance
    detected, shorter than 1/4 s) give NaN with a warning instead of an exception.
    """
    import pesq

    reference, estimate = _pair(reference, estimate)
    if rate != PESQ_RATE:
        reference = resample(reference, rate, PESQ_RATE)
        estimate = resample(estimate, rate, PESQ_RATE)
    if not (np.any(reference) and np.any(estimate)):
        warnings.warn("PESQ: a signal is silent; returning NaN", RuntimeWarning, stacklevel=2)
        return math.nan
    try:
        return float(pesq.pesq(PESQ_RATE, reference, estimate, "wb"))
    except (pesq.NoUtterancesError, pesq.BufferTooShortError) as err:
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else err
        warnings.warn(f"PESQ: {reason}; returning NaN", RuntimeWarning, stacklevel=2)
        return math.nan


def estoi(reference: np.ndarray, estimate: np.ndarray, rate: int) -> float:
    """Extended STOI (Jensen & Taal 2016) with ``pystoi`` (``extended=True``), 0…1."""
    from pystoi import stoi

    reference, estimate = _pair(reference, estimate)
    return float(stoi(reference, estimate, rate, extended=True))


def dnsmos_available() -> bool:
    """True when DNSMOS can run: ``speechmos`` and ``onnxruntime`` (the ``[eval]`` extra)."""
    needed = ("speechmos", "onnxruntime", "librosa")
    return all(importlib.util.find_spec(name) is not None for name in needed)


_DNSMOS_MODEL = None


def _dnsmos_model():
    """speechmos' DNSMOS with its bundled ONNX models, in one-threaded sessions (cached)."""
    global _DNSMOS_MODEL
    if _DNSMOS_MODEL is None:
        import onnxruntime as ort
        from speechmos import dnsmos

        class OneThreadDNSMOS(dnsmos.DNSMOS):
            def __init__(self, primary_model_path: str, p808_model_path: str) -> None:
                options = ort.SessionOptions()
                options.intra_op_num_threads = options.inter_op_num_threads = 1
                providers = ["CPUExecutionProvider"]
                self.primary_model_path = primary_model_path
                self.onnx_sess = ort.InferenceSession(
                    primary_model_path, options, providers=providers
                )
                self.p808_onnx_sess = ort.InferenceSession(
                    p808_model_path, options, providers=providers
                )

        folder = os.path.join(os.path.dirname(os.path.abspath(dnsmos.__file__)), "dnsmos_models")
        _DNSMOS_MODEL = OneThreadDNSMOS(
            os.path.join(folder, "sig_bak_ovr.onnx"), os.path.join(folder, "model_v8.onnx")
        )
    return _DNSMOS_MODEL


def dnsmos(estimate: np.ndarray, rate: int) -> dict[str, float]:
    """Non-intrusive DNSMOS P.835 (SIG/BAK/OVRL) and P.808 of a 1-D signal, via ``speechmos``.

    Returns ``{"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "dnsmos_p808"}``; resamples to 16 kHz.
    """
    estimate = np.asarray(estimate, dtype=np.float32)
    if rate != DNSMOS_RATE:
        estimate = resample(estimate, rate, DNSMOS_RATE)
    scores = _dnsmos_model()(np.clip(estimate, -1.0, 1.0), DNSMOS_RATE, False)
    return {name: float(scores[key]) for key, name in DNSMOS_KEYS.items()}


def compute_metrics(
    reference: np.ndarray, estimate: np.ndarray, rate: int, *, with_dnsmos: bool = False
) -> dict[str, float]:
    """``{"pesq", "estoi", "si_sdr"}`` of an estimate against its reference (+ ``dnsmos_*``)."""
    scores = {
        "pesq": pesq_wb(reference, estimate, rate),
        "estoi": estoi(reference, estimate, rate),
        "si_sdr": si_sdr(reference, estimate),
    }
    if with_dnsmos:
        scores.update(dnsmos(estimate, rate))
    return scores


def mean_ci95(values) -> tuple[float, float, float]:
    """(mean, low, high): the mean and its two-sided 95 % Student-t confidence interval.

    NaNs are ignored. mean ± t₀.₉₇₅(n − 1)·s/√n with s the sample standard deviation (ddof 1);
    the bounds are NaN for fewer than two values, everything is NaN for none.
    """
    from scipy.stats import t as student_t

    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if values.size < 2:
        return mean, math.nan, math.nan
    half = float(
        student_t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    )
    return mean, mean - half, mean + half
