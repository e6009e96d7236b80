"""The pseudo_job options (wsss_mmseg.pseudo.job_options); each bad value is also refused by a
whole job before its first image (tests/test_pseudo/test_workdir.py)."""
import os

from mmengine.config import Config

from wsss_mmseg.pseudo.job_options import resolve_job_options


def test_resolve_job_options_fills_worker_defaults():
    job = resolve_job_options(Config(dict(pseudo_job=dict(num_workers=None))))
    assert job['num_workers'] == max(0, min(4, (os.cpu_count() or 1) - 1))  # None: auto
    assert job['postprocess_workers'] == 0  # default: inline
