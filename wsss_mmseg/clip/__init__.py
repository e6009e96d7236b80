"""CLIP access layer: build/load frozen open_clip models, dense ViT/ResNet features.

Pure torch + open_clip (no mmseg/mmengine imports).
"""
from .checkpoint import (CheckpointError, CheckpointMismatchError, LoadedCheckpoint, UnsafeCheckpointError,
                         load_checkpoint_file, read_torchscript_tensors)
from .factory import (PRECISIONS, PretrainedDownloadError, build_clip, clear_clip_cache, get_tokenizer,
                      resolve_model_name)
from .openai_config import infer_openai_config, is_openai_format
from .resnet import CLIPResNet, as_conv1x1, linear_as_conv1x1
from .tiny import openai_state_dict, save_openai_format, tiny_clip
from .vit import CLIPViT, block_forward, interpolate_pos_embed, multihead_attention, qkv_projection

__all__ = [
    'CheckpointError', 'CheckpointMismatchError', 'UnsafeCheckpointError', 'PretrainedDownloadError',
    'LoadedCheckpoint', 'load_checkpoint_file', 'read_torchscript_tensors',
    'PRECISIONS', 'build_clip', 'clear_clip_cache', 'get_tokenizer', 'infer_openai_config',
    'is_openai_format', 'resolve_model_name',
    'CLIPViT', 'block_forward', 'interpolate_pos_embed', 'multihead_attention', 'qkv_projection',
    'CLIPResNet', 'as_conv1x1', 'linear_as_conv1x1',
    'tiny_clip', 'save_openai_format', 'openai_state_dict',
]
