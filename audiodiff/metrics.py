"""Objective speech-quality metrics."""

from __future__ import annotations

import numpy as np


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (Le Roux et al. 2019), over the last axis of 1-D signals."""
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {estimate.shape}")
    reference = reference - reference.mean()
    estimate = estimate - estimate.mean()
    alpha = np.dot(estimate, reference) / max(np.dot(reference, reference), 1e-12)
    target = alpha * reference
    noise = estimate - target
    return float(
        10 * np.log10(max(np.dot(target, target), 1e-12) / max(np.dot(noise, noise), 1e-12))
    )
