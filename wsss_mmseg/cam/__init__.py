"""CAM generators: CLIP-ES Softmax-GradCAM (pure functions) and its pipeline class."""
from .clip_es import CLIP_MEAN, CLIP_STD, CLIPESCAM, clip_es_input_size, clip_es_preprocess, resize_maps
from .softmax_gradcam import (CAM_EPS, clip_softmax, gradcam_maps, gradcam_weights, minmax_normalize,
                              normalize_gradcam, patch_mean_embedding, softmax_gradcam, target_gradients_batched,
                              target_gradients_per_class)

__all__ = [
    'CLIP_MEAN', 'CLIP_STD', 'CLIPESCAM', 'clip_es_input_size', 'clip_es_preprocess', 'resize_maps',
    'CAM_EPS', 'clip_softmax', 'gradcam_maps', 'gradcam_weights', 'minmax_normalize', 'normalize_gradcam',
    'patch_mean_embedding', 'softmax_gradcam', 'target_gradients_batched', 'target_gradients_per_class',
]
