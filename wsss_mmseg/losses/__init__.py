"""Loss math (pure torch, no mmseg imports).

:func:`cgl_cross_entropy` is the confidence-guided loss of CLIP-ES; the
registered mmseg wrapper is :class:`wsss_mmseg.models.cgl_loss.CGLLoss`.
"""
from .cgl import cgl_cross_entropy, check_mu, confidence_keep_mask

__all__ = ['cgl_cross_entropy', 'check_mu', 'confidence_keep_mask']
