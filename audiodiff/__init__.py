"""audiodiff: diffusion-based speech enhancement (SGMSE+, StoRM, DDSP) in PyTorch."""

__version__ = "0.1.0"
DEFAULT_MODEL = "storm-tiny-pool"  # the bundled model every command uses unless told otherwise
STREAM_MODEL = "causal-pool"  # ... except ``stream`` and ``serve``: the causal real-time model
__all__ = ["DEFAULT_MODEL", "STREAM_MODEL", "Enhancer", "__version__"]


def __getattr__(name: str):
    # Imported lazily so that `import audiodiff.spec` (and the CLI's start-up) stay light.
    if name == "Enhancer":
        from .enhance import Enhancer

        return Enhancer
    raise AttributeError(f"module 'audiodiff' has no attribute {name!r}")
