"""Mapping of reference (sgmse 0.1.2) NCSN++ state dicts onto :class:`NCSNpp` module names.

The reference backbones (``ncsnpp``, ``ncsnpp_v2``, ``ncsnpp_48k``) keep their layers in one flat
``all_modules`` list in construction order, plus ``output_layer``; ``_reference_layout`` replays
that order for an :class:`NCSNppConfig`, so each index gets our module prefix.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from audiodiff.nets.ncsnpp import NCSNpp, NCSNppConfig

_RESBLOCK_NAMES = {
    "GroupNorm_0": "norm1",
    "Conv_0": "conv1",
    "Dense_0": "time_proj",
    "GroupNorm_1": "norm2",
    "Conv_1": "conv2",
    "Conv_2": "skip",
}
_ATTENTION_NAMES = {
    "GroupNorm_0": "norm",
    "NIN_0": "query",
    "NIN_1": "key",
    "NIN_2": "value",
    "NIN_3": "out",
}
# Marks a reference weight that the reference network itself never uses (dropped on conversion).
_UNUSED = "<unused>"


def _reference_layout(cfg: NCSNppConfig) -> list[tuple[str, str]]:
    """(our module prefix, kind) for each ``all_modules`` index, in reference construction order."""
    layout: list[tuple[str, str]] = []
    # The reference always builds the Fourier projection, even when it does not use it.
    layout.append(("time_embed.fourier" if cfg.time_conditional else _UNUSED, "fourier"))
    if cfg.time_conditional:
        layout += [("time_embed.linear1", "plain"), ("time_embed.linear2", "plain")]
    layout.append(("input_conv", "plain"))
    for level in range(cfg.num_levels):
        for index in range(cfg.num_res_blocks):
            layout.append((f"down.{level}.blocks.{index}", "resblock"))
            if cfg.level_has_attention(level):
                layout.append((f"down.{level}.attn.{index}", "attention"))
        if level != cfg.num_levels - 1:
            layout.append((f"down.{level}.downsample", "resblock"))
            if cfg.input_skip:
                layout.append((f"down.{level}.input_skip", "combine"))
    layout += [("mid.block1", "resblock"), ("mid.attn", "attention"), ("mid.block2", "resblock")]
    for level in reversed(range(cfg.num_levels)):
        for index in range(cfg.num_res_blocks + 1):
            layout.append((f"up.{level}.blocks.{index}", "resblock"))
        if cfg.level_has_attention(level):
            layout.append((f"up.{level}.attn", "attention"))
        if cfg.output_skip:
            layout.append((f"up.{level}.output_skip.norm", "plain"))
            layout.append((f"up.{level}.output_skip.conv", "plain"))
        if level != 0:
            layout.append((f"up.{level}.upsample", "resblock"))
    if not cfg.output_skip:
        layout += [("output_head.norm", "plain"), ("output_head.conv", "plain")]
    return layout


def _map_local_key(kind: str, local: str, cfg: NCSNppConfig) -> str | None:
    """Reference key inside one module -> our key inside it, ``_UNUSED``, or None if unknown."""
    head, _, tail = local.partition(".")
    if kind == "plain":
        return local
    if kind == "fourier":
        return "frequencies" if local == "W" else None
    if kind == "combine":
        return tail if head == "Conv_0" else None
    if kind == "resblock":
        if head == "Dense_0" and not cfg.time_conditional:
            return _UNUSED
        return f"{_RESBLOCK_NAMES[head]}.{tail}" if head in _RESBLOCK_NAMES else None
    # Attention: GroupNorm_0.{weight,bias} and NIN_k.{W,b}, where NIN computes x @ W + b.
    if head == "GroupNorm_0":
        return f"norm.{tail}"
    param = {"W": "weight", "b": "bias"}.get(tail)
    return f"{_ATTENTION_NAMES[head]}.{param}" if head in _ATTENTION_NAMES and param else None


def convert_reference_state_dict(
    ref_state_dict: Mapping[str, Tensor], config: NCSNppConfig
) -> dict[str, Tensor]:
    """Map a reference ``sgmse`` NCSNpp state dict (``all_modules.N.*``, ``output_layer.*``) onto
    our module names for ``config``. Raises ValueError listing missing / unexpected keys and shape
    mismatches. Strip any wrapper prefix (e.g. ``dnn.`` in SGMSE checkpoints) before calling."""
    layout = _reference_layout(config)
    with torch.device("meta"):
        expected = {key: value.shape for key, value in NCSNpp(config).state_dict().items()}
    converted: dict[str, Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for ref_key, value in ref_state_dict.items():
        our_key = _map_reference_key(ref_key, layout, config)
        if our_key == _UNUSED:
            continue
        if our_key not in expected:
            unexpected.append(ref_key)
            continue
        if ref_key.endswith(".W") and value.ndim == 2:  # NIN (in, out) -> nn.Linear (out, in)
            value = value.t().contiguous()
        if value.shape != expected[our_key]:
            mismatched.append(
                f"{ref_key} -> {our_key}: {tuple(value.shape)} vs {tuple(expected[our_key])}"
            )
        converted[our_key] = value
    missing = sorted(set(expected) - set(converted))
    problems = [
        f"{label} ({len(items)}): {items[:8]}{' ...' if len(items) > 8 else ''}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatch", mismatched),
        )
        if items
    ]
    if problems:
        raise ValueError(
            "reference state dict does not match NCSNppConfig "
            f"{config.to_dict()}: " + "; ".join(problems)
        )
    return converted


def _map_reference_key(
    ref_key: str, layout: list[tuple[str, str]], cfg: NCSNppConfig
) -> str | None:
    """Full reference key -> our full key, ``_UNUSED``, or None if it has no place in ``layout``."""
    if ref_key.startswith("output_layer."):
        return "output_proj." + ref_key.removeprefix("output_layer.")
    parts = ref_key.split(".", 2)
    if len(parts) != 3 or parts[0] != "all_modules" or not parts[1].isdigit():
        return None
    index = int(parts[1])
    if index >= len(layout):
        return None
    prefix, kind = layout[index]
    if prefix == _UNUSED:
        return _UNUSED
    local = _map_local_key(kind, parts[2], cfg)
    if local is None or local == _UNUSED:
        return local
    return f"{prefix}.{local}"
