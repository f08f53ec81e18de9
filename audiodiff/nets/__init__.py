"""Score-network backbones: NCSN++ (Song et al. 2021) as used by SGMSE+ and StoRM."""

from audiodiff.nets.ncsnpp import PRESETS, NCSNpp, NCSNppConfig, build_backbone
from audiodiff.nets.reference import convert_reference_state_dict

__all__ = ["PRESETS", "NCSNpp", "NCSNppConfig", "build_backbone", "convert_reference_state_dict"]
