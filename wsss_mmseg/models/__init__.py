"""Registered mmseg components (thin wrappers over the pure functions)."""
from . import (affinity_net, cgl_loss, classic, classic_acol, classic_ae_psl,  # noqa: F401
               classic_cam_generator, classic_heads, classic_mixup_cam, classic_sec, clip_encoders,
               data_preprocessor, generators, maskclip, maskclip_generator, maskclip_plus, pacl,
               postprocessors, random_walk, segmenter_generator, wrappers)
