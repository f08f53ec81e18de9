"""Training data: paired layouts, on-the-fly mixing, and torch datasets of waveform crops.

- :mod:`audiodiff.data.mixing`: pure numpy mixing functions (SNR, gain, noise fitting, reverb).
- :mod:`audiodiff.data.pairs`: ``base/{train,valid,test}/{clean,noisy}`` layouts and their checks.
- :mod:`audiodiff.data.datasets`: ``PairedDataset``, ``OnTheFlyMixDataset`` and ``MixConfig``.

Names are imported lazily, so ``audiodiff.data.pairs`` and ``mixing`` do not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "datasets": (
        "MixConfig",
        "MixItem",
        "OnTheFlyMixDataset",
        "PairedDataset",
        "load_mono",
        "manifest_rt60",
        "normalise",
    ),
    "pairs": (
        "AUDIO_SUFFIXES",
        "SUBSETS",
        "Pair",
        "PairReport",
        "PairingError",
        "audio_info",
        "check_pair",
        "check_pairs",
        "find_pairs",
        "list_audio_files",
    ),
    "mixing": (
        "apply_gain_db",
        "ddsp_rir",
        "estimate_rt60",
        "fit_noise",
        "mix_at_snr",
        "random_ddsp_rir",
        "reverberate",
        "rms",
        "snr_db",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'audiodiff.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
