"""Model wrappers registered in mmengine's ``MODEL_WRAPPERS``."""
from __future__ import annotations

from typing import Any

import torch.nn as nn
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUCompatibleDDP(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` that also runs on CPU (gloo).

    mmengine's runner passes ``device_ids=[LOCAL_RANK]`` to every
    ``DistributedDataParallel`` wrapper; torch refuses ``device_ids`` for a module
    whose parameters live on the CPU. This wrapper drops them in that case and
    behaves exactly like ``MMDistributedDataParallel`` otherwise. Use it with
    ``model_wrapper_cfg = dict(type='CPUCompatibleDDP')`` (our configs do).

    A model without any trainable parameter (e.g. the training-free MaskCLIP segmentor
    under a distributed ``tools/test.py``) needs no gradient synchronisation and torch's
    DDP refuses it: the module is then returned unwrapped.

    Args:
        module: The model to wrap.
        **kwargs: Passed on to ``MMDistributedDataParallel``.
    """

    def __new__(cls, module: nn.Module, **kwargs: Any):
        if not any(p.requires_grad for p in module.parameters()):
            return module
        return super().__new__(cls)

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        device = next((p.device for p in module.parameters()), None)
        if device is None or device.type == 'cpu':
            kwargs.pop('device_ids', None)
            kwargs.pop('output_device', None)
            # torch's SyncBatchNorm only runs on GPUs: plain BatchNorm on CPU (configs keep SyncBN)
            module = revert_sync_batchnorm(module)
        super().__init__(module=module, **kwargs)
