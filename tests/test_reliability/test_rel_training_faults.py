"""Training-side faults with a real mmengine Runner (tiny toy model, CPU, in forked children).

* a kill *while a checkpoint file is being written*: mmengine writes the
  checkpoint first and ``last_checkpoint`` after it, so ``resume`` goes back to
  the last complete checkpoint and finishes with the same weights as an
  uninterrupted run;
* a NaN loss: ``NaNLossGuardHook`` stops training before that iteration's
  checkpoint is saved.
"""
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import wsss_mmseg.hooks.nan_guard  # noqa: F401  (registers NaNLossGuardHook)
from wsss_mmseg.hooks.nan_guard import NaNLossGuardHook, non_finite_losses


class _Toy(nn.Module):
    """y = w.x regression; ``nan_at`` makes the loss NaN from that iteration (1-based)."""

    def __init__(self, nan_at=None):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.nan_at = nan_at
        self.calls = 0

    def train_step(self, data, optim_wrapper):
        self.calls += 1
        x, y = torch.stack(list(data[0])), torch.stack(list(data[1]))  # pseudo_collate
        loss = ((self.lin(x) - y) ** 2).mean()
        if self.nan_at is not None and self.calls >= self.nan_at:
            loss = loss * float('nan')
        optim_wrapper.update_params(loss)
        return dict(loss=loss.detach())

    def val_step(self, data):  # pragma: no cover - unused
        return []

    def test_step(self, data):  # pragma: no cover - unused
        return []


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 4, generator=g)
    return [(x[i], x[i].sum(0, keepdim=True)) for i in range(16)]


def _runner(work_dir, *, nan_at=None, resume=False, guard=True):
    from mmengine.runner import Runner
    torch.manual_seed(0)
    return Runner(
        model=_Toy(nan_at), work_dir=str(work_dir),
        train_dataloader=dict(dataset=_data(), sampler=dict(type='DefaultSampler', shuffle=False),
                              batch_size=4, collate_fn=dict(type='pseudo_collate'),
                              num_workers=0),
        train_cfg=dict(by_epoch=False, max_iters=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.05)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=100)),
        custom_hooks=[dict(type='NaNLossGuardHook')] if guard else [],
        default_scope='mmseg', resume=resume, randomness=dict(seed=0),
        experiment_name=f'toy_{os.getpid()}_{time.monotonic_ns()}')


def _in_child(fn):
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            fn()
        except BaseException:  # noqa: BLE001
            import traceback
            traceback.print_exc()
            code = 3
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def test_non_finite_losses_pure():
    assert non_finite_losses(dict(loss=torch.tensor(1.0), acc=torch.tensor(3))) == {}
    bad = non_finite_losses(dict(loss=torch.tensor(float('nan')), b=float('inf'),
                                 c=torch.tensor([1.0, float('-inf')])))
    assert set(bad) == {'loss', 'b', 'c'} and bad['c'] == float('-inf')


def test_kill_while_saving_a_checkpoint_then_resume(tmp_path):
    ref = tmp_path / 'ref'
    assert _in_child(lambda: _runner(ref).train()) == 0
    ref_state = torch.load(ref / 'iter_6.pth', map_location='cpu', weights_only=False)['state_dict']

    work = tmp_path / 'work'

    def killed_run():
        from mmengine.fileio.backends import local_backend
        real_put = local_backend.LocalBackend.put

        def put(self, obj, filepath):
            if str(filepath).endswith('iter_4.pth'):  # half the bytes, then die
                with open(filepath, 'wb') as f:
                    f.write(obj[: len(obj) // 2])
                    f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_put(self, obj, filepath)

        local_backend.LocalBackend.put = put
        _runner(work).train()

    status = _in_child(killed_run)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert (work / 'iter_4.pth').stat().st_size > 0  # the partial file is there ...
    assert (work / 'last_checkpoint').read_text().endswith('iter_3.pth')  # ... not pointed to
    with pytest.raises(Exception):
        torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)

    assert _in_child(lambda: _runner(work, resume=True).train()) == 0
    assert (work / 'last_checkpoint').read_text().endswith('iter_6.pth')
    state = torch.load(work / 'iter_6.pth', map_location='cpu', weights_only=False)
    assert state['meta']['iter'] == 6
    for k, v in ref_state.items():
        torch.testing.assert_close(state['state_dict'][k], v, rtol=0, atol=0)


def test_nan_loss_stops_before_the_broken_checkpoint(tmp_path):
    work = tmp_path / 'nan'
    runner = _runner(work, nan_at=4)
    with pytest.raises(FloatingPointError) as info:
        runner.train()
    msg = str(info.value)
    assert 'non-finite loss at iteration 4' in msg and 'loss=nan' in msg
    assert 'iter_3.pth' in msg
    assert sorted(p.name for p in work.glob('iter_*.pth')) == ['iter_1.pth', 'iter_2.pth',
                                                               'iter_3.pth']
    assert (work / 'last_checkpoint').read_text().endswith('iter_3.pth')
    saved = torch.load(work / 'iter_3.pth', map_location='cpu', weights_only=False)
    assert all(torch.isfinite(v).all() for v in saved['state_dict'].values())


def test_without_the_guard_mmengine_saves_the_broken_checkpoint(tmp_path):
    """The failure the hook prevents (documents why it is needed)."""
    work = tmp_path / 'noguard'
    _runner(work, nan_at=4, guard=False).train()
    saved = torch.load(work / 'iter_4.pth', map_location='cpu', weights_only=False)
    assert not all(torch.isfinite(v).all() for v in saved['state_dict'].values())


def test_guard_has_the_highest_priority():
    from mmengine.hooks import CheckpointHook
    from mmengine.runner.priority import get_priority
    assert get_priority(NaNLossGuardHook.priority) < get_priority(CheckpointHook.priority)
