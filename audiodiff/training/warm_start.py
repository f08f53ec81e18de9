"""Warm start: a time-conditional NCSN++ initialised from a trained time-free one (a predictor).

The two networks share a preset (widths, levels, pyramids); the target has a time embedding and
more input channels (x_t and further conditioning beside y). Every weight of the source is copied;
the time-embedding injections of the residual blocks (``time_proj``) are zero, and the input
channels the source does not have get zero weights in the input convolution and the input-pyramid
1×1 convolutions. The output pyramid carries ``in_channels`` channels, so the source's pyramid
channels go to the same target channels and the others are zero (head rows and the columns of the
final 1×1 projection). At initialisation the target then computes exactly the source's output
from y, for every t and whatever the other inputs hold.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["warm_start_from_predictor"]


def _embed(source: torch.Tensor, shape: torch.Size, channels: Sequence[int]) -> torch.Tensor:
    """Place ``source`` into zeros of ``shape`` along the one axis where the sizes differ."""
    differ = [axis for axis, (a, b) in enumerate(zip(source.shape, shape)) if a != b]
    if len(source.shape) != len(shape) or len(differ) != 1:
        raise ValueError(f"cannot embed a {tuple(source.shape)} weight into {tuple(shape)}")
    if source.shape[differ[0]] != len(channels):
        raise ValueError(f"cannot embed a {tuple(source.shape)} weight into {tuple(shape)}")
    out = source.new_zeros(shape)
    index = torch.tensor(list(channels), dtype=torch.long)
    return out.index_copy(differ[0], index, source)


def warm_start_from_predictor(
    target: nn.Module, source: nn.Module, channels: Sequence[int] = (2, 3)
) -> None:
    """Initialise the time-conditional NCSN++ ``target`` from the time-free ``source`` in place.

    ``channels``: the target's input channels that hold the source's inputs, (2, 3) for y in the
    [x_t, y] or [x_t, y, Ŷ] layout of :class:`audiodiff.models.ScoreModel`.
    """
    src_cfg, dst_cfg = source.config, target.config
    if src_cfg.time_conditional or not dst_cfg.time_conditional:
        raise ValueError("warm start goes from a time-free network to a time-conditional one")
    same = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "input_skip", "output_skip")
    for name in (*same, "out_channels", "num_freqs", "fir_kernel"):
        if getattr(src_cfg, name) != getattr(dst_cfg, name):
            raise ValueError(
                f"warm start needs the same {name}: {getattr(src_cfg, name)!r} vs "
                f"{getattr(dst_cfg, name)!r}"
            )
    if len(channels) != src_cfg.in_channels:
        raise ValueError(f"give {src_cfg.in_channels} target channels, got {tuple(channels)}")
    src = source.state_dict()
    new = {}
    for key, value in target.state_dict().items():
        if key in src:
            weight = src[key].to(value.dtype)
            fits = weight.shape == value.shape
            new[key] = weight if fits else _embed(weight, value.shape, channels)
        elif ".time_proj." in key:
            new[key] = torch.zeros_like(value)  # no time injection at the start
        elif key.startswith("time_embed."):
            new[key] = value  # its own initialisation; unused while time_proj is zero
        else:
            raise ValueError(f"the time-free network has no weight for {key}")
    target.load_state_dict(new)
