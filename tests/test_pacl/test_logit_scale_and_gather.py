"""PACL caption loss: the learnable logit scale (spec maskclip_pacl.md §3.2, §3.3) and the
cross-process negatives (§3.7), against hand computations / a single-process reference."""
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from wsss_mmseg.models.pacl import PACLInfoNCELoss
from wsss_mmseg.pacl.compat_fn import compatibility
from wsss_mmseg.pacl.losses import symmetric_info_nce

REPO = Path(__file__).resolve().parents[2]


def _sgd_step(loss_mod, phi, lr):
    opt = torch.optim.SGD(loss_mod.parameters(), lr=lr)
    opt.zero_grad()
    loss_mod(phi).backward()
    opt.step()
    return float(loss_mod.params.log_scale.detach())


def test_scale_on_the_bound_moves_down_by_the_hand_computed_step():
    # phi = [[0, e], [e, 0]], e = 0.01: every row/column CE = log(1 + exp(s e) / 1) -> L = log(1 + e^{s e})
    # dL/dlog s = s e sigmoid(s e) = sigmoid(1) at s = 100 (the old clamp gave exactly 0 here)
    phi = torch.tensor([[0.0, 0.01], [0.01, 0.0]])
    mod = PACLInfoNCELoss(init_logit_scale=100.0, max_logit_scale=100.0)
    lr = 0.1
    grad = 1.0 / (1.0 + math.exp(-1.0))
    log_s = _sgd_step(mod, phi, lr)
    assert log_s == pytest.approx(math.log(100.0) - lr * grad, abs=1e-6)
    assert math.exp(log_s) == pytest.approx(100.0 * math.exp(-0.1 * 0.7310585786), rel=1e-6)   # 92.95


def test_scale_below_the_bound_moves_up_and_is_clamped_in_place_after_overshooting():
    # phi = 0.01 I: L = log(1 + e^{-s e}); dL/dlog s = -s e sigmoid(-s e) = -0.5 sigmoid(-0.5) at s = 50
    phi = torch.tensor([[0.01, 0.0], [0.0, 0.01]])
    mod = PACLInfoNCELoss(init_logit_scale=50.0, max_logit_scale=100.0)
    grad = -0.5 / (1.0 + math.exp(0.5))
    log_s = _sgd_step(mod, phi, 0.1)
    assert log_s == pytest.approx(math.log(50.0) - 0.1 * grad, abs=1e-6)
    # a huge step pushes the parameter over the bound; the next use clamps it in place to log(100)
    _sgd_step(mod, phi, 1e4)
    assert float(mod.params.log_scale) > math.log(100.0)
    mod(phi)
    assert float(mod.params.log_scale) == pytest.approx(math.log(100.0), abs=1e-6)
    assert float(mod.scale) == pytest.approx(100.0, rel=1e-6)


def test_fixed_scale_is_a_buffer_and_still_capped():
    mod = PACLInfoNCELoss(init_logit_scale=1 / 0.07, learnable=False)
    assert not list(mod.parameters())
    phi = torch.tensor([[0.3, 0.1], [0.0, 0.2]])
    torch.testing.assert_close(mod(phi), symmetric_info_nce(phi, logit_scale=1 / 0.07))


WORKER = textwrap.dedent('''
    import sys, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[5])
    from wsss_mmseg.pacl.distributed import caption_compatibility
    from wsss_mmseg.pacl.losses import symmetric_info_nce
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=world)
    data = torch.load(out + '/data.pt')
    lo, hi = data['splits'][rank], data['splits'][rank + 1]
    patches = data['patches'][lo:hi].clone().requires_grad_(True)
    loss = symmetric_info_nce(caption_compatibility(patches, data['texts'][lo:hi], chunk_size=2),
                              logit_scale=data['scale'])
    loss.backward()
    torch.save(dict(loss=loss.detach(), grad=patches.grad), out + f'/rank{rank}.pt')
    dist.destroy_process_group()
''')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_gloo_processes_give_the_single_process_loss_of_the_concatenated_batch(tmp_path):
    g = torch.Generator().manual_seed(0)
    patches = torch.randn(5, 6, 8, generator=g)              # 5 images, 6 patches, D = 8
    texts = torch.nn.functional.normalize(torch.randn(5, 8, generator=g), dim=-1)
    splits = [0, 3, 5]                                       # unequal local batches: 3 + 2
    torch.save(dict(patches=patches, texts=texts, splits=splits, scale=10.0), tmp_path / 'data.pt')
    # single-process reference over the concatenated batch
    ref_in = patches.clone().requires_grad_(True)
    ref = symmetric_info_nce(compatibility(ref_in, texts), logit_scale=10.0)
    ref.backward()
    script = tmp_path / 'worker.py'
    script.write_text(WORKER)
    port = str(_free_port())
    env = dict(os.environ, OMP_NUM_THREADS='1')
    procs = [subprocess.Popen([sys.executable, str(script), str(r), '2', port, str(tmp_path), str(REPO)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out.decode()
    for r in range(2):
        res = torch.load(tmp_path / f'rank{r}.pt')
        torch.testing.assert_close(res['loss'], ref.detach(), atol=1e-6, rtol=1e-6)
        # local rows get world_size x the single-process gradient; DDP's averaging divides by 2
        lo, hi = splits[r], splits[r + 1]
        torch.testing.assert_close(res['grad'] / 2, ref_in.grad[lo:hi], atol=1e-6, rtol=1e-5)
    # the local-only loss (what a rank computed before) differs from the global one
    local = symmetric_info_nce(compatibility(patches[:3], texts[:3]), logit_scale=10.0)
    assert abs(float(local) - float(ref)) > 1e-3
