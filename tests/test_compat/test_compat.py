"""The compatibility module: each fix works where needed and is a no-op elsewhere."""
import io
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import wsss_mmseg
from wsss_mmseg import compat


# ------------------------------------------------------------------ mmcv.ops
def test_mmcv_ops_importable_after_import():
    import mmseg.models  # noqa: F401  (fails on mmcv-lite + upstream mmseg without the fix)
    from mmcv.ops import point_sample  # noqa: F401


def test_mmcv_ops_shim_only_where_compiled_ops_are_missing(monkeypatch):
    real = sys.modules.get('mmcv.ops')
    fake_full = types.ModuleType('mmcv.ops')  # what a full mmcv would have imported
    monkeypatch.setitem(sys.modules, 'mmcv.ops', fake_full)
    assert not compat.mmcv_ops_missing()
    compat._fix_mmcv_ops()
    assert sys.modules['mmcv.ops'] is fake_full
    if real is not None:
        monkeypatch.setitem(sys.modules, 'mmcv.ops', real)


@pytest.mark.skipif(not compat.applied().get('mmcv_ops'), reason='mmcv has compiled ops here')
def test_shim_point_sample_is_bilinear_grid_sample():
    from mmcv.ops import point_sample
    torch.manual_seed(0)
    feat = torch.randn(2, 3, 5, 7)
    pts = torch.rand(2, 11, 2)
    out = point_sample(feat, pts, align_corners=False)
    ref = F.grid_sample(feat, (2 * pts - 1).unsqueeze(2), align_corners=False).squeeze(3)
    torch.testing.assert_close(out, ref)


@pytest.mark.skipif(not compat.applied().get('mmcv_ops'), reason='mmcv has compiled ops here')
def test_shim_compiled_ops_raise_module_not_found():
    with pytest.raises(ModuleNotFoundError, match='CrissCrossAttention'):
        from mmcv.ops import CrissCrossAttention  # noqa: F401
    from mmcv.ops import sigmoid_focal_loss
    with pytest.raises(RuntimeError, match='compiled ops'):
        sigmoid_focal_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long))


# ------------------------------------------------------------------ torch.load
def _mmengine_like_checkpoint() -> bytes:
    from mmengine.logging import HistoryBuffer
    buf = HistoryBuffer()
    buf.update(0.5)
    ckpt = dict(meta=dict(epoch=1, iter=np.int64(3), lr=np.float64(0.01),
                          message_hub=dict(log_scalars={'loss': buf})),
                state_dict={'w': torch.ones(2)})
    stream = io.BytesIO()
    torch.save(ckpt, stream)
    return stream.getvalue()


def test_mmengine_checkpoint_loads_weights_only():
    from mmengine.runner.checkpoint import _load_checkpoint  # noqa: F401
    data = _mmengine_like_checkpoint()
    if compat.torch_load_fix_needed() and not compat.applied().get('torch_load'):
        pytest.fail('fix needed but not applied')
    # Whatever the stack, mmengine's own loader reads its checkpoint.
    from mmengine.runner import CheckpointLoader
    path = pytest.importorskip('pathlib').Path
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        p = path(d) / 'ckpt.pth'
        p.write_bytes(data)
        ckpt = CheckpointLoader.load_checkpoint(str(p), map_location='cpu')
    assert ckpt['meta']['iter'] == 3
    assert ckpt['meta']['message_hub']['log_scalars']['loss'].current() == 0.5


def test_torch_load_still_refuses_arbitrary_classes():
    class Evil:
        def __reduce__(self):
            return (print, ('pwned',))
    stream = io.BytesIO()
    torch.save({'x': Evil()}, stream)
    stream.seek(0)
    with pytest.raises(Exception):
        torch.load(stream, weights_only=True)


def test_torch_load_fix_noop_without_weights_only_default(monkeypatch):
    monkeypatch.setattr(compat, '_torch_loads_weights_only_by_default', lambda: False)
    assert not compat.torch_load_fix_needed()


def test_torch_load_fix_noop_when_mmengine_handles_it(monkeypatch):
    import mmengine.runner.checkpoint as ckpt
    monkeypatch.setattr(ckpt, 'get_torch_safe_globals', lambda: [], raising=False)
    assert not compat.torch_load_fix_needed()


# ------------------------------------------------------------------ dist on CPU
def test_cpu_dist_wrapper_uses_gloo_without_cuda(monkeypatch):
    calls = {}
    original = lambda backend, init_backend='torch', **kw: calls.setdefault('orig', backend)  # noqa
    wrapped = compat._cpu_safe_init_dist_pytorch(original)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.distributed, 'init_process_group',
                        lambda backend, **kw: calls.setdefault('init', backend))
    monkeypatch.setattr(torch.cuda, 'set_device',
                        lambda *a: pytest.fail('set_device called without CUDA'))
    wrapped('nccl')
    assert calls == {'init': 'gloo'}


def test_cpu_dist_wrapper_is_noop_with_cuda(monkeypatch):
    calls = {}
    original = lambda backend, init_backend='torch', **kw: calls.setdefault('orig', backend)  # noqa
    wrapped = compat._cpu_safe_init_dist_pytorch(original)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    wrapped('nccl')
    assert calls == {'orig': 'nccl'}


def test_cpu_dist_fix_not_applied_with_cuda(monkeypatch):
    import mmengine.dist.utils as dist_utils
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    before = dist_utils._init_dist_pytorch
    monkeypatch.setattr(dist_utils, '_init_dist_pytorch',
                        getattr(before, '__wsss_mmseg_wrapped__', before))
    compat._fix_cpu_dist()
    assert not hasattr(dist_utils._init_dist_pytorch, '__wsss_mmseg_wrapped__')


def test_apply_is_idempotent():
    assert compat.apply() == compat.apply() == wsss_mmseg.compat.applied()


def test_cpu_slurm_wrapper_keeps_mmengine_env_logic_uses_gloo_skips_set_device(monkeypatch):
    calls = {}

    def original(backend, port=None, init_backend='torch', **kw):  # stands for mmengine's
        torch.cuda.set_device(0)  # what mmengine does after setting RANK/WORLD_SIZE/...
        calls['orig'] = (backend, port, init_backend)

    wrapped = compat._cpu_safe_init_dist_slurm(original)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    real_set_device = torch.cuda.set_device
    wrapped('nccl', port=29501)
    assert calls == {'orig': ('gloo', 29501, 'torch')}
    assert torch.cuda.set_device is real_set_device  # restored
    with pytest.raises(RuntimeError, match='needs CUDA'):
        wrapped('nccl', init_backend='deepspeed')


def test_cpu_slurm_wrapper_is_noop_with_cuda(monkeypatch):
    calls = {}

    def original(backend, port=None, init_backend='torch', **kw):
        calls.setdefault('orig', backend)

    wrapped = compat._cpu_safe_init_dist_slurm(original)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    wrapped('nccl')
    assert calls == {'orig': 'nccl'}
