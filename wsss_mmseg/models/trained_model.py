"""Build a registered mmseg model from a config and load its trained checkpoint (frozen, eval).

Used by the generators that run a network trained with ``mim train`` (classifier CAMs,
AffinityNet / IRN random walk, a trained segmenter as pseudo-label source).
"""
from __future__ import annotations

import copy
import os
from typing import Mapping, Optional

import torch
import torch.nn as nn
from mmseg.registry import MODELS

__all__ = ['build_trained_model', 'trained_model_config']


def trained_model_config(model: Optional[Mapping] = None, config: Optional[str] = None, *,
                         what: str = 'model') -> Mapping:
    """The model config given as ``model=dict`` or as the ``model`` of a training config file.

    Args:
        model: Model config, or
        config: a training config file whose ``model`` is used (exactly one).
        what: Name used in error messages.

    Returns:
        The model config.

    Raises:
        ValueError: Neither or both are given.
        FileNotFoundError: ``config`` does not exist.
    """
    if (model is None) == (config is None):
        raise ValueError(f'{what} needs exactly one of model=dict(...) or config=<config file>')
    if config is None:
        return model
    from mmengine.config import Config
    if not os.path.isfile(config):
        raise FileNotFoundError(f'{what} config not found: {config}')
    return Config.fromfile(config)['model']


def build_trained_model(checkpoint: str, *, model: Optional[Mapping] = None,
                        config: Optional[str] = None, device: torch.device,
                        what: str = 'model') -> nn.Module:
    """Build a registered model from ``model=dict`` or a config file and load a checkpoint.

    Args:
        checkpoint: Checkpoint path.
        model: Model config, or
        config: a training config file whose ``model`` is used (exactly one).
        device: Target device.
        what: Name used in error messages.

    Returns:
        The model in eval mode on ``device``.
    """
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    model = trained_model_config(model, config, what=what)
    if not os.path.isfile(str(checkpoint)):
        raise FileNotFoundError(f'{what} checkpoint not found: {checkpoint}')
    cfg = copy.deepcopy(dict(model))
    cfg.pop('pretrained', None)
    if isinstance(cfg.get('backbone'), Mapping):
        cfg['backbone'] = dict(cfg['backbone'], init_cfg=None)
    # nested parts (data preprocessor, backbone) resolve in mmseg's scope even when no Runner
    # has set a default scope (tools/generate_pseudo.py)
    with DefaultScope.overwrite_default_scope('mmseg'):
        net = MODELS.build(cfg)
    load_checkpoint(net, str(checkpoint), map_location='cpu', strict=True, logger='silent')
    return net.to(device).eval()
