"""PACL (Patch Aligned Contrastive Learning) math: compatibility function, losses, alignment metrics.

Pure torch (no mmseg/mmengine); the registered head, losses, generator and datasets live in
:mod:`wsss_mmseg.models.pacl` and :mod:`wsss_mmseg.datasets.pacl_data`.
"""
from .alignment import (coherence_auc, patch_labels_from_mask, patch_zero_shot_accuracy, roc_auc)
from .compat_fn import (check_embeddings, compatibility, patch_attention, patch_text_similarity,
                        pooled_embedding)
from .embedder import VisionEmbedder
from .losses import (clamp_log_scale_, clamped_scale, dense_prior_loss, multilabel_sigmoid_loss,
                     negative_suppression_loss, symmetric_info_nce)

__all__ = [
    'check_embeddings', 'compatibility', 'patch_attention', 'patch_text_similarity', 'pooled_embedding',
    'VisionEmbedder', 'clamp_log_scale_', 'clamped_scale', 'dense_prior_loss', 'multilabel_sigmoid_loss',
    'negative_suppression_loss', 'symmetric_info_nce', 'coherence_auc', 'patch_labels_from_mask',
    'patch_zero_shot_accuracy', 'roc_auc',
]
