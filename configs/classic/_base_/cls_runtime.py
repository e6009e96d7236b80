# Runtime of the classic WSSS classifier configs (configs/classic/*): plugin imports, seed, and the
# shared runtime (env, logs, DDP wrapper) of configs/_base_/runtime_core.py.
_base_ = ['../../_base_/runtime_core.py']
custom_imports = dict(
    imports=['wsss_mmseg', 'wsss_mmseg.models.classic', 'wsss_mmseg.datasets.classic_transforms',
             'wsss_mmseg.hooks.adversarial_erasing'],
    allow_failed_imports=False)
default_scope = 'mmseg'
randomness = dict(seed=0)
