"""Small tensor helpers shared across the package."""

from __future__ import annotations

import torch


def append_dims(x: torch.Tensor, target_ndim: int) -> torch.Tensor:
    """Append trailing singleton dims to ``x`` until it has ``target_ndim`` dims.

    A per-example coefficient of shape (B,) becomes (B, 1, 1, 1) to broadcast against (B, C, F, T).
    """
    missing = target_ndim - x.ndim
    if missing < 0:
        raise ValueError(f"cannot append dims: x has {x.ndim} dims, target is {target_ndim}")
    return x.reshape(*x.shape, *([1] * missing))


def complex_randn(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """Circular complex standard normal CN(0, 1): E|z|^2 = 1, each part N(0, 1/2)."""
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


def frame_mask(lengths: torch.Tensor | None, num_frames: int) -> torch.Tensor | None:
    """(B,) valid frame counts -> (B, 1, 1, T) boolean mask, or None when every frame is valid."""
    if lengths is None:
        return None
    frames = torch.arange(num_frames, device=lengths.device)
    return (frames[None, :] < lengths[:, None])[:, None, None, :]  # (B, T) -> (B, 1, 1, T)
