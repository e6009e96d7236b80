"""Pseudo-mask making from class activation maps."""
from .mask import background_score, cams_to_probs, make_pseudo_mask

__all__ = ['background_score', 'cams_to_probs', 'make_pseudo_mask']
