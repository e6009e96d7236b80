"""Training hooks registered in ``mmseg.registry.HOOKS``."""
from .adversarial_erasing import AdversarialErasingHook
from .pseudo_label_hook import PseudoLabelHook

__all__ = ['AdversarialErasingHook', 'PseudoLabelHook']
