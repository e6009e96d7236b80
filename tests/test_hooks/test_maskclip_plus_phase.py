"""MaskCLIPPlusPhaseHook's log says "never" when self-training never starts (issue #17 item 9).

Before, ``switch_ratio=1.0`` (annotation-free, spec maskclip_pacl.md §2.3) with ``max_iters=25`` logged
"self-training from iteration 26" -- an iteration the run never reaches.
"""
import logging
from types import SimpleNamespace

import pytest

from wsss_mmseg.hooks.maskclip_plus_phase import MaskCLIPPlusPhaseHook, describe_switch


def _run(hook, max_iters, iters, caplog):
    model = SimpleNamespace(phase=None)
    model.set_phase = lambda p: setattr(model, 'phase', p)
    logger = logging.getLogger('test_maskclip_plus_phase')
    runner = SimpleNamespace(model=model, max_iters=max_iters, iter=0, logger=logger)
    phases = []
    with caplog.at_level(logging.INFO, logger=logger.name):
        for it in iters:
            runner.iter = it
            hook.before_train_iter(runner, batch_idx=it)
            phases.append(model.phase)
    return phases, [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize('kwargs', [dict(switch_ratio=1.0), dict(switch_iter=25), dict(switch_iter=40)])
def test_never_switching_run_logs_never(caplog, kwargs):
    phases, logs = _run(MaskCLIPPlusPhaseHook(**kwargs), 25, range(25), caplog)
    assert phases == ['teacher'] * 25
    assert len(logs) == 1
    assert "phase 'teacher' from iteration 1" in logs[0]
    assert 'self-training: never' in logs[0]
    assert 'from iteration 26' not in logs[0] and 'self-training from' not in logs[0]


def test_switching_run_logs_the_1_based_iteration(caplog):
    # ratio 0.1 of 25 -> ceil(2.5) = 3 (0-based) -> logged as iteration 4
    phases, logs = _run(MaskCLIPPlusPhaseHook(switch_ratio=0.1), 25, range(5), caplog)
    assert phases == ['teacher'] * 3 + ['self'] * 2
    assert len(logs) == 2
    assert all('self-training from iteration 4' in m for m in logs)
    assert "phase 'self' from iteration 4" in logs[1]


def test_describe_switch():
    assert describe_switch(None, 10) == 'self-training: never (teacher labels only)'
    assert describe_switch(9, 10) == 'self-training from iteration 10'
    assert describe_switch(10, 10).startswith('self-training: never (it would start at iteration 11')
