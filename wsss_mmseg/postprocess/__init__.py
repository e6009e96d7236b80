"""Post-processing of class activation maps: CAA (attention affinity) and dense CRF."""
from .caa import (average_attention, box_mask, caa_propagate, caa_propagate_power, caa_refine, caa_transition, cam_boxes,
                  class_box_masks, matrix_power, sinkhorn, symmetrize)
from .crf import CRF_DEFAULTS, MEAN_BGR, crf_image, crf_probs, crf_refine, crf_unary, dense_crf

__all__ = [
    'average_attention', 'box_mask', 'caa_propagate', 'caa_propagate_power', 'caa_refine', 'caa_transition', 'cam_boxes',
    'class_box_masks', 'matrix_power', 'sinkhorn', 'symmetrize',
    'CRF_DEFAULTS', 'MEAN_BGR', 'crf_image', 'crf_probs', 'crf_refine', 'crf_unary', 'dense_crf',
]
