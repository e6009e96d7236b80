"""Classic image-level-label WSSS baselines: the math as small pure functions.

* :mod:`.cam` — CAM (classifier weights on the feature map), Grad-CAM, MDC map
  fusion, multi-scale + flip aggregation, feature affinity for CAA;
* :mod:`.hide_and_seek` — random grid-patch hiding (Hide-and-Seek);
* :mod:`.mixup` — Mixup of images and multi-hot label vectors;
* :mod:`.seam` — SEAM's scale-equivariance regularisation;
* :mod:`.erasing` — adversarial-erasing region mining, merging and mean filling.

Only torch and numpy are imported here; the registered mmseg wrappers live in
:mod:`wsss_mmseg.models.classic`, :mod:`wsss_mmseg.datasets.classic_transforms`.
"""
from .cam import (aggregate_maps, class_activation_maps, feature_affinity, grad_cam,
                  mdc_fuse, multi_scale_flip_maps, normalize_maps)
from .erasing import erase_with_fill, mine_regions
from .hide_and_seek import apply_hidden_cells, draw_hidden_cells, hide_and_seek
from .metrics import average_precision, multilabel_scores
from .mixup import mixup, multi_hot, sample_mixup_lambda
from .seam import equivariance_loss, rescale_maps

__all__ = ['class_activation_maps', 'grad_cam', 'mdc_fuse', 'normalize_maps', 'aggregate_maps',
           'multi_scale_flip_maps', 'feature_affinity', 'draw_hidden_cells', 'apply_hidden_cells',
           'hide_and_seek', 'mixup', 'multi_hot', 'sample_mixup_lambda', 'equivariance_loss',
           'rescale_maps', 'erase_with_fill', 'mine_regions', 'average_precision',
           'multilabel_scores']
