# Hooks of the training configs on CLIP-ES pseudo labels (deeplabv3*_cgl_*.py, segformer_b2_cgl_voc.py).
custom_hooks = [
    # mode='auto': reuse / resume / (re)generate; 'reuse' never generates; 'regenerate' always.
    dict(type='PseudoLabelHook', mode='auto', allow_failures=False, report=True),
    dict(type='NaNLossGuardHook'),  # stop on a non-finite loss before a checkpoint is written
]
# the learning rates are those of batch 16 (4 GPUs x 4 images); enable=True scales them linearly
auto_scale_lr = dict(enable=False, base_batch_size=16)
