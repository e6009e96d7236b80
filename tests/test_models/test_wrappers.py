"""CPUCompatibleDDP: device_ids are dropped for CPU modules only."""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.registry import MODEL_WRAPPERS

import wsss_mmseg  # noqa: F401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture
def gloo_group():
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}',
                            rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_registered():
    assert MODEL_WRAPPERS.get('CPUCompatibleDDP') is not None


def test_cpu_module_with_device_ids_wraps(gloo_group):
    from mmengine.model import BaseModel
    cls = MODEL_WRAPPERS.get('CPUCompatibleDDP')

    class Tiny(BaseModel):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            out = self.lin(inputs)
            return {'loss': out.mean()} if mode == 'loss' else out

    ddp = MODEL_WRAPPERS.build(dict(type='CPUCompatibleDDP'),
                               default_args=dict(module=Tiny(), device_ids=[0]))
    assert isinstance(ddp, cls)
    assert ddp.device_ids is None
    out = ddp(torch.ones(3, 2))
    assert out.shape == (3, 1)


def test_module_without_trainable_parameters_is_returned_unwrapped(gloo_group):
    frozen = nn.Linear(2, 1).requires_grad_(False)
    out = MODEL_WRAPPERS.build(dict(type='CPUCompatibleDDP'),
                               default_args=dict(module=frozen, device_ids=[0]))
    assert out is frozen


def test_syncbn_is_reverted_on_cpu(gloo_group):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.SyncBatchNorm(4))
    ddp = MODEL_WRAPPERS.build(dict(type='CPUCompatibleDDP'), default_args=dict(module=model, device_ids=[0]))
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in ddp.module.modules())
    out = ddp(torch.randn(2, 3, 5, 5))
    assert out.shape == (2, 4, 5, 5)
