"""Training hooks registered in ``mmseg.registry.HOOKS``."""
from .adversarial_erasing import AdversarialErasingHook
from .maskclip_plus_phase import MaskCLIPPlusPhaseHook
from .nan_guard import NaNLossGuardHook
from .pseudo_label_hook import PseudoLabelHook

__all__ = ['AdversarialErasingHook', 'MaskCLIPPlusPhaseHook', 'NaNLossGuardHook', 'PseudoLabelHook']
