"""OpenAI-format CLIP checkpoints as open_clip model configs.

Recognise an OpenAI release (:func:`is_openai_format`), infer the open_clip config of its
geometry from the tensors (:func:`infer_openai_config`: widths, depths, patch size, image
size, context length; heads by OpenAI's ``width // 64`` convention), and compare two configs
field by field (:func:`compare_model_configs`). Pure config data: nothing here builds a model
(:mod:`wsss_mmseg.clip.architecture` does).
"""
from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any, Dict, List, Mapping, Tuple

import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from .checkpoint import CheckpointError

__all__ = ['OPENAI_SCALAR_KEYS', 'infer_openai_config', 'is_openai_format', 'compare_model_configs']

OPENAI_SCALAR_KEYS = ('input_resolution', 'context_length', 'vocab_size')


def _layer_indices(state_dict: Mapping[str, torch.Tensor], prefix: str) -> List[int]:
    pattern = re.compile(re.escape(prefix) + r'(\d+)\.')
    return sorted({int(m.group(1)) for k in state_dict for m in [pattern.match(k)] if m})


def _contiguous_count(indices: List[int], what: str, path: str) -> int:
    if indices != list(range(len(indices))):
        raise CheckpointError(f"checkpoint '{path}': {what} indices {indices} are not 0..N-1.")
    return len(indices)


def _openai_heads(width: int) -> int:
    """OpenAI's head convention (``width // 64``), at least one head for tiny widths."""
    return max(1, width // 64)


def _square_grid(state_dict: Mapping[str, Any], key: str, path: str) -> int:
    """Side of the square token grid of a ``(1 + grid**2, width)`` positional embedding."""
    n_pos = int(state_dict[key].shape[0])
    grid = round((n_pos - 1) ** 0.5)
    if grid * grid + 1 != n_pos:
        raise CheckpointError(
            f"checkpoint '{path}': {key} has {n_pos} rows, not 1 + a square grid; cannot infer "
            'the native image size.')
    return grid


def _require(state_dict: Mapping[str, torch.Tensor], keys: Tuple[str, ...], path: str) -> None:
    missing = [k for k in keys if k not in state_dict]
    if missing:
        sample = list(state_dict)[:5]
        raise CheckpointError(
            f"checkpoint '{path}' is not an OpenAI-layout CLIP state dict: missing "
            f'{missing} (its first keys are {sample}). Pass model_name=<open_clip architecture> '
            'for checkpoints in another layout.')


def infer_openai_config(state_dict: Mapping[str, torch.Tensor], *, path: str = '<state dict>'
                        ) -> Dict[str, Any]:
    """Infer an open_clip model config from an OpenAI-layout CLIP state dict.

    Works for any width/depth of the ViT and ModifiedResNet architectures. Heads are not
    stored in the weights: OpenAI's convention ``width // 64`` is used (at least 1; for
    ModifiedResNet ``width * 32 // 64``). The MLP ratio is read from the ``c_fc`` shapes.

    Args:
        state_dict: OpenAI key names (``visual.conv1.weight``, ``transformer.resblocks.0...``).
        path: Source name for error messages.

    Returns:
        ``{'embed_dim', 'quick_gelu': True, 'vision_cfg': {...}, 'text_cfg': {...}}`` in
        open_clip's config format.

    Raises:
        CheckpointError: Required keys are missing or the shapes are inconsistent.
    """
    _require(state_dict, ('visual.conv1.weight', 'text_projection', 'token_embedding.weight',
                          'positional_embedding', 'ln_final.weight'), path)
    vision: Dict[str, Any]
    if 'visual.proj' in state_dict:
        _require(state_dict, ('visual.positional_embedding',), path)
        conv = state_dict['visual.conv1.weight']
        width, patch = int(conv.shape[0]), int(conv.shape[-1])
        grid = _square_grid(state_dict, 'visual.positional_embedding', path)
        layers = _contiguous_count(
            [i for i in _layer_indices(state_dict, 'visual.transformer.resblocks.')
             if f'visual.transformer.resblocks.{i}.attn.in_proj_weight' in state_dict],
            'visual.transformer.resblocks', path)
        if layers == 0:
            raise CheckpointError(f"checkpoint '{path}' has no visual.transformer.resblocks.")
        heads = _openai_heads(width)
        if width % heads:
            raise CheckpointError(
                f"checkpoint '{path}': vision width {width} is not divisible by {heads} heads.")
        mlp = state_dict.get('visual.transformer.resblocks.0.mlp.c_fc.weight')
        vision = dict(layers=layers, width=width, head_width=width // heads, patch_size=patch,
                      image_size=patch * grid,
                      mlp_ratio=float(mlp.shape[0]) / width if mlp is not None else 4.0)
    elif 'visual.attnpool.positional_embedding' in state_dict:
        _require(state_dict, ('visual.layer1.0.conv1.weight',), path)
        counts = tuple(
            len({k.split('.')[2] for k in state_dict if k.startswith(f'visual.layer{b}.')})
            for b in (1, 2, 3, 4))
        if min(counts) == 0:
            raise CheckpointError(f"checkpoint '{path}': ResNet stage sizes {counts} contain an empty stage.")
        out_grid = _square_grid(state_dict, 'visual.attnpool.positional_embedding', path)
        vision = dict(layers=counts, width=int(state_dict['visual.layer1.0.conv1.weight'].shape[0]),
                      head_width=64, patch_size=None, image_size=out_grid * 32)
    else:
        raise CheckpointError(
            f"checkpoint '{path}' has neither 'visual.proj' (ViT) nor "
            "'visual.attnpool.positional_embedding' (ModifiedResNet); not an OpenAI-layout CLIP.")

    text_width = int(state_dict['ln_final.weight'].shape[0])
    text_layers = _contiguous_count(_layer_indices(state_dict, 'transformer.resblocks.'),
                                    'transformer.resblocks', path)
    text_heads = _openai_heads(text_width)
    if text_width % text_heads:
        raise CheckpointError(
            f"checkpoint '{path}': text width {text_width} is not divisible by {text_heads} heads.")
    text_mlp = state_dict.get('transformer.resblocks.0.mlp.c_fc.weight')
    text = dict(context_length=int(state_dict['positional_embedding'].shape[0]),
                vocab_size=int(state_dict['token_embedding.weight'].shape[0]),
                width=text_width, heads=text_heads, layers=text_layers,
                mlp_ratio=float(text_mlp.shape[0]) / text_width if text_mlp is not None else 4.0)
    return dict(embed_dim=int(state_dict['text_projection'].shape[1]), quick_gelu=True,
                vision_cfg=vision, text_cfg=text)


def is_openai_format(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict carries OpenAI's release markers.

    Markers: one of the int scalars ``input_resolution``/``context_length``/``vocab_size``,
    or OpenAI's mixed precision (``visual.conv1.weight`` fp16 while ``ln_final.weight``
    is fp32).

    Args:
        state_dict: Flat state dict.

    Returns:
        True when the file should be treated as an OpenAI release.
    """
    if any(k in state_dict for k in OPENAI_SCALAR_KEYS):
        return True
    conv, ln = state_dict.get('visual.conv1.weight'), state_dict.get('ln_final.weight')
    return (conv is not None and ln is not None and conv.dtype == torch.float16
            and ln.dtype == torch.float32)


_IGNORED_VISION_FIELDS = {'patch_dropout', 'output_tokens', 'timm_model_pretrained', 'head_width'}
_IGNORED_TEXT_FIELDS = {'output_tokens', 'hf_model_pretrained', 'hf_tokenizer_name', 'tokenizer_mode',
                        'tokenizer_kwargs'}


def _comparable(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """Flatten a model config into ``{'field.path': value}`` of architecture-relevant fields."""
    vision = asdict(CLIPVisionCfg(**cfg.get('vision_cfg', {})))
    text = asdict(CLIPTextCfg(**cfg.get('text_cfg', {})))
    if isinstance(vision['layers'], (list, tuple)):
        vision['layers'] = tuple(vision['layers'])
        vision['heads'] = vision['width'] * 32 // vision['head_width']
        vision['patch_size'] = None
    else:
        vision['heads'] = vision['width'] // vision['head_width']
    if isinstance(vision['image_size'], (list, tuple)) and len(set(vision['image_size'])) == 1:
        vision['image_size'] = vision['image_size'][0]
    for field in ('mlp_ratio',):
        vision[field], text[field] = float(vision[field]), float(text[field])
    flat: Dict[str, Any] = {'embed_dim': cfg.get('embed_dim')}
    flat.update({f'vision_cfg.{k}': v for k, v in vision.items() if k not in _IGNORED_VISION_FIELDS})
    flat.update({f'text_cfg.{k}': v for k, v in text.items() if k not in _IGNORED_TEXT_FIELDS})
    for key in ('custom_text', 'init_logit_bias', 'nonscalar_logit_scale', 'multimodal_cfg'):
        flat[key] = cfg.get(key) or None
    return flat


def compare_model_configs(file_cfg: Mapping[str, Any], named_cfg: Mapping[str, Any]
                          ) -> List[Tuple[str, Any, Any]]:
    """Architecture fields that differ between two open_clip model configs.

    ``quick_gelu`` is not compared (OpenAI weights always use QuickGELU, whatever the
    named config says); neither are training-only and tokenizer fields.

    Args:
        file_cfg: Config inferred from a checkpoint.
        named_cfg: Config of a named open_clip architecture.

    Returns:
        ``[(field, file value, config value), ...]``, empty when they match.
    """
    a, b = _comparable(file_cfg), _comparable(named_cfg)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
