"""CLIP architectures: instantiate open_clip models and fill them strictly with a state dict.

:func:`build_openai_architecture` instantiates the ``CLIP`` of an inferred OpenAI config,
``_create_open_clip`` a named open_clip architecture; both leave the global torch RNG
untouched and initialise with a fixed seed, or skip the random fills for a model that
:func:`load_state_dict_strict` fills next. ``_apply_precision`` casts a filled model.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, List, Mapping

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_weights_to_lp, get_cast_dtype
from torch import nn

from .checkpoint import CheckpointMismatchError
from .openai_config import OPENAI_SCALAR_KEYS
from .skip_init import skip_random_fills

__all__ = ['build_openai_architecture', 'load_state_dict_strict']

_RANDOM_INIT_SEED = 0


def build_openai_architecture(cfg: Mapping[str, Any], *, precision: str = 'fp32',
                              skip_init: bool = False) -> CLIP:
    """Instantiate an (untrained) open_clip ``CLIP`` for an inferred OpenAI config.

    Parameters are fp32; ``precision`` only selects the LayerNorm flavour (fp32-computing
    LayerNorm for the mixed-precision modes), exactly as open_clip does. The global torch
    RNG is left untouched.

    Args:
        cfg: Output of :func:`infer_openai_config`.
        precision: One of :data:`wsss_mmseg.clip.factory.PRECISIONS`.
        skip_init: Leave the parameters uninitialised (:func:`skip_random_fills`); only for a
            model that :func:`load_state_dict_strict` fills next.

    Returns:
        The model (random weights, or uninitialised with ``skip_init``; QuickGELU).
    """
    fills = skip_random_fills() if skip_init else contextlib.nullcontext()
    with torch.random.fork_rng(devices=[]), fills:
        torch.manual_seed(_RANDOM_INIT_SEED)
        return CLIP(int(cfg['embed_dim']), vision_cfg=CLIPVisionCfg(**cfg['vision_cfg']),
                    text_cfg=CLIPTextCfg(**cfg['text_cfg']), quick_gelu=True,
                    cast_dtype=get_cast_dtype(precision))


def _preview(items: List[Any], n: int = 5) -> str:
    shown = ', '.join(str(i) for i in items[:n])
    return shown + (f', ... ({len(items)} in all)' if len(items) > n else '')


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                           path: str, model_desc: str) -> None:
    """Load a state dict requiring an exact key and shape match, with a readable error.

    Entries that name non-persistent buffers of ``model`` (e.g. the text ``attn_mask`` a
    scripted archive carries) and OpenAI's int scalars are ignored.

    Args:
        model: Target model.
        state_dict: Tensors to load (dtype is converted by ``load_state_dict``).
        path: Checkpoint name for error messages.
        model_desc: Model description for error messages.

    Raises:
        CheckpointMismatchError: Missing/unexpected keys or shape mismatches (the first few
            offending keys are named).
    """
    expected = model.state_dict()
    non_persistent = {name for name, _ in model.named_buffers()} - set(expected)
    state = {k: v for k, v in state_dict.items()
             if k not in non_persistent and k not in OPENAI_SCALAR_KEYS}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f'{k} (file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)})'
              for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys: {_preview(missing)}')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys: {_preview(unexpected)}')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatches: {_preview(shapes)}')
    if problems:
        raise CheckpointMismatchError(
            f"checkpoint '{path}' does not fit {model_desc}: " + '; '.join(problems) + '.')
    model.load_state_dict(state, strict=True)


def _apply_precision(model: nn.Module, precision: str, device: torch.device) -> None:
    if precision in ('fp16', 'bf16'):
        model.to(device=device)
        convert_weights_to_lp(model, dtype=torch.float16 if precision == 'fp16' else torch.bfloat16)
    elif precision in ('pure_fp16', 'pure_bf16'):
        model.to(device=device, dtype=torch.float16 if precision == 'pure_fp16' else torch.bfloat16)
    else:
        model.to(device=device)


class _DropRandomInitWarning(logging.Filter):
    """Hide open_clip's 'initialized randomly' warning for models we fill ourselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'Model initialized randomly' not in record.getMessage()


def _create_open_clip(name: str, precision: str, quick_gelu: bool, skip_init: bool = False) -> nn.Module:
    """``open_clip.create_model`` without weights; global RNG untouched, init seeded (or skipped:
    only when :func:`load_state_dict_strict` fills the model next)."""
    root, quiet = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(quiet)
    fills = skip_random_fills() if skip_init else contextlib.nullcontext()
    try:
        with torch.random.fork_rng(devices=[]), fills:
            torch.manual_seed(_RANDOM_INIT_SEED)
            return open_clip.create_model(name, pretrained=None, precision=precision, device='cpu',
                                          force_quick_gelu=quick_gelu)
    finally:
        root.removeFilter(quiet)
