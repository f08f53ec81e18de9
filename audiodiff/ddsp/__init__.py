"""DDSP building blocks in PyTorch (Engel et al. 2020, "DDSP: Differentiable Digital Signal
Processing"): harmonic and filtered-noise synthesisers, reverb, the multi-scale spectral loss and
a deterministic speech-like test signal."""

from audiodiff.ddsp.losses import (
    DEFAULT_FFT_SIZES,
    MultiScaleSpectralLoss,
    multiscale_spectral_loss,
)
from audiodiff.ddsp.reverb import (
    LearnableReverb,
    apply_ir,
    exponential_decay_ir,
    exponential_reverb,
)
from audiodiff.ddsp.signals import SpeechLike, speech_like, speech_like_with_f0
from audiodiff.ddsp.synth import (
    HarmonicConfig,
    NoiseConfig,
    exp_sigmoid,
    fft_convolve,
    filtered_noise,
    frequency_impulse_response,
    harmonic_amplitudes,
    harmonic_synth,
    remove_above_nyquist,
    time_varying_fir,
    upsample,
)

__all__ = [
    "DEFAULT_FFT_SIZES",
    "HarmonicConfig",
    "LearnableReverb",
    "MultiScaleSpectralLoss",
    "NoiseConfig",
    "SpeechLike",
    "apply_ir",
    "exp_sigmoid",
    "exponential_decay_ir",
    "exponential_reverb",
    "fft_convolve",
    "filtered_noise",
    "frequency_impulse_response",
    "harmonic_amplitudes",
    "harmonic_synth",
    "multiscale_spectral_loss",
    "remove_above_nyquist",
    "speech_like",
    "speech_like_with_f0",
    "time_varying_fir",
    "upsample",
]
