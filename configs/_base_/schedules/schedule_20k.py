# mmsegmentation's configs/_base_/schedules/schedule_20k.py (Apache-2.0), unchanged values:
# SGD momentum 0.9, weight decay 5e-4, poly LR (power 0.9) over 20k iterations -- also the solver
# of the CLIP-ES segmentation stage (deeplab-pytorch voc12.yaml, spec clip_es.md section 8).
# Loops and hooks (checkpoint every 2000 iterations): default_hooks.py.
_base_ = ['./default_hooks.py']
optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=20000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=20000, val_interval=2000)
default_hooks = dict(visualization=dict(type='SegVisualizationHook'))
