"""Build frozen open_clip CLIP models from names, pretrained tags or local checkpoints.

``build_clip`` is the single entry point of the plugin for getting a CLIP model:

* ``pretrained=None``: random weights (deterministic, seed 0; for tests);
* an open_clip pretrained tag (``'openai'``, ``'laion2b_s34b_b88k'``, ...): downloaded
  through open_clip's hub logic; offline (a 2.5 s connection probe, or ``HF_HUB_OFFLINE=1``)
  a cached copy is used, or one error says which config key takes a local file instead
  (:mod:`wsss_mmseg.clip.download`);
* a local file (read by :mod:`wsss_mmseg.clip.checkpoint`, never executing pickles by
  default):

  - **OpenAI format** -- a TorchScript archive (OpenAI's released ``.pt``) or a state dict
    with OpenAI's mixed fp16/fp32 dtypes or its int scalars ``input_resolution``,
    ``context_length``, ``vocab_size``. The geometry (widths, depths, patch size, image
    size, context length, ...) is inferred from the tensors; heads follow OpenAI's
    convention (``width // 64``, at least 1) and the activation is QuickGELU, as in all
    OpenAI models. With ``model_name`` set, the inferred geometry must match that open_clip
    config (the config's GELU/QuickGELU choice is ignored: OpenAI weights always mean
    QuickGELU); ``model_name=None`` takes the geometry from the file.
  - **open_clip format** -- ``{'state_dict': ...}`` or a bare fp32 state dict (optionally
    ``module.``-prefixed) loaded strictly into ``open_clip.create_model(model_name)``.
    (open_clip's ``CLIP`` uses the same key names as OpenAI, so a bare state dict without
    OpenAI's dtype pattern or int scalars is treated like this when ``model_name`` is
    given, and like an OpenAI file when ``model_name`` is None.)

Built models are in eval mode with ``requires_grad=False`` everywhere and are cached, so
the image and text encoders of one config share one instance (:func:`clear_clip_cache`).

The OpenAI-format geometry inference lives in :mod:`wsss_mmseg.clip.openai_config`, the
instantiation and strict filling of architectures in :mod:`wsss_mmseg.clip.architecture`;
this module re-exports their public names.
"""
from __future__ import annotations

import difflib
import functools
import os
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import open_clip
import torch
from open_clip.model import convert_to_custom_text_state_dict
from torch import nn

from .architecture import _apply_precision, _create_open_clip, build_openai_architecture, load_state_dict_strict
from .checkpoint import CheckpointMismatchError, load_checkpoint_file
from .download import PretrainedDownloadError, download_weights
from .openai_config import OPENAI_SCALAR_KEYS, compare_model_configs, infer_openai_config, is_openai_format

__all__ = [
    'PRECISIONS',
    'OPENAI_SCALAR_KEYS',
    'PretrainedDownloadError',
    'build_clip',
    'clear_clip_cache',
    'get_tokenizer',
    'resolve_model_name',
    'infer_openai_config',
    'is_openai_format',
    'compare_model_configs',
    'build_openai_architecture',
    'load_state_dict_strict',
]

PathLike = Union[str, 'os.PathLike[str]']

PRECISIONS = ('fp32', 'fp16', 'bf16', 'pure_fp16', 'pure_bf16')
_CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt', '.safetensors', '.pkl', '.tar')


# --------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------

#: The ``clip=dict(...)`` block registered components use when none is given.
DEFAULT_CLIP = dict(model_name='ViT-B-16', pretrained='openai')

def resolve_model_name(model_name: Optional[str]) -> Optional[str]:
    """Validate an open_clip architecture name.

    ``'ViT-B/16'`` (OpenAI spelling) is accepted as ``'ViT-B-16'``; a unique
    case-insensitive match is accepted too.

    Args:
        model_name: Name from ``open_clip.list_models()``, or None.

    Returns:
        The canonical open_clip name, or None.

    Raises:
        ValueError: Unknown name (the message lists close matches) or a ``hf-hub:`` /
            ``local-dir:`` schema, which this loader does not support.
    """
    if model_name is None:
        return None
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f'model_name must be a non-empty string or None, got {model_name!r}.')
    if model_name.startswith(('hf-hub:', 'local-dir:')):
        raise ValueError(
            f"model_name '{model_name}': 'hf-hub:'/'local-dir:' schemas are not supported; download "
            'the checkpoint and pass model_name=<architecture> with pretrained=<file path>.')
    models = open_clip.list_models()
    name = model_name.replace('/', '-')
    if name in models:
        return name
    folded = {m.lower().replace('_', '-'): m for m in models}
    key = name.lower().replace('_', '-')
    if key in folded:
        return folded[key]
    close = [folded[m] for m in difflib.get_close_matches(key, list(folded), n=5, cutoff=0.6)]
    hint = f' Close matches: {close}.' if close else ''
    raise ValueError(
        f"unknown CLIP model name '{model_name}'.{hint} All names: open_clip.list_models(). "
        'Use model_name=None to take the architecture from an OpenAI-format checkpoint.')


def _model_config(name: str) -> Dict[str, Any]:
    cfg = open_clip.get_model_config(name)
    if cfg is None:  # pragma: no cover - resolve_model_name guarantees it exists
        raise ValueError(f"open_clip has no config for '{name}'.")
    return cfg


# --------------------------------------------------------------------------------------
# Loading a checkpoint file
# --------------------------------------------------------------------------------------

def _model_from_file(name: Optional[str], path: str, *, precision: str, device: torch.device,
                     allow_unsafe_pickle: bool, quick_gelu: bool) -> nn.Module:
    ckpt = load_checkpoint_file(path, allow_unsafe_pickle=allow_unsafe_pickle)
    state = ckpt.state_dict
    if name is None or ckpt.file_format == 'torchscript' or is_openai_format(state):
        cfg = infer_openai_config(state, path=path)
        if name is not None:
            diffs = compare_model_configs(cfg, _model_config(name))
            if diffs:
                listed = '; '.join(f'{k}: file {a!r} vs config {b!r}' for k, a, b in diffs)
                raise CheckpointMismatchError(
                    f"OpenAI-format checkpoint '{path}' does not match model_name '{name}': {listed}. "
                    'Pass model_name=None to take the architecture from the checkpoint.')
        model = build_openai_architecture(cfg, precision=precision, skip_init=True)
        desc = f"the OpenAI-format architecture inferred from it ({_describe(cfg)})"
        load_state_dict_strict(model, state, path=path, model_desc=desc)
        _apply_precision(model, precision, device)
        return model
    model = _create_open_clip(name, precision, quick_gelu, skip_init=True)
    if 'positional_embedding' in state and not hasattr(model, 'positional_embedding'):
        state = convert_to_custom_text_state_dict(state)
    logit_scale = getattr(model, 'logit_scale', None)
    if 'logit_scale' in state and logit_scale is not None and state['logit_scale'].ndim != logit_scale.ndim:
        state = dict(state, logit_scale=state['logit_scale'].reshape(logit_scale.shape))
    load_state_dict_strict(model, state, path=path, model_desc=f"open_clip model '{name}'")
    model.to(device=device)
    return model


def _describe(cfg: Mapping[str, Any]) -> str:
    v, t = cfg['vision_cfg'], cfg['text_cfg']
    kind = f"ViT patch {v['patch_size']}" if v.get('patch_size') else 'ModifiedResNet'
    return (f"{kind}, vision width {v['width']}, layers {v['layers']}, image {v['image_size']}, "
            f"text width {t['width']} x {t['layers']}, embed {cfg['embed_dim']}")


# --------------------------------------------------------------------------------------
# Public entry point + cache
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Source:
    kind: str  # 'random' | 'file' | 'tag'
    value: str = ''
    stamp: Tuple[Any, ...] = ()


def _looks_like_path(value: str) -> bool:
    return (os.sep in value or '/' in value or value.startswith(('.', '~'))
            or value.lower().endswith(_CHECKPOINT_SUFFIXES))


def _resolve_source(name: Optional[str], pretrained: Optional[PathLike],
                    cache_dir: Optional[str], config_key: Optional[str] = None) -> _Source:
    if pretrained is None:
        return _Source('random')
    value = os.fspath(pretrained)
    if not isinstance(value, str) or not value:
        raise ValueError(f'pretrained must be a tag, a file path or None, got {pretrained!r}.')
    expanded = os.path.expanduser(value)
    if os.path.exists(expanded):
        if not os.path.isfile(expanded):
            raise FileNotFoundError(f"pretrained checkpoint '{expanded}' is not a file.")
        real = os.path.realpath(expanded)
        st = os.stat(real)
        return _Source('file', real, (st.st_mtime_ns, st.st_size))
    if name is not None and open_clip.get_pretrained_cfg(name, value):
        return _Source('tag', value, (os.path.abspath(cache_dir) if cache_dir else '',))
    if _looks_like_path(value):
        where = f'{config_key}: ' if config_key else ''
        raise FileNotFoundError(f"{where}pretrained checkpoint file '{os.path.abspath(expanded)}' does not exist.")
    if name is None:
        raise ValueError(
            f"pretrained='{value}' is not an existing file, and a pretrained tag needs a model_name "
            "(e.g. build_clip('ViT-B-16', 'openai')).")
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise ValueError(
        f"pretrained='{value}' is neither an existing file nor a pretrained tag of '{name}' "
        f'(known tags: {tags}).')


def _download(name: str, tag: str, cache_dir: Optional[str], config_key: Optional[str]) -> Tuple[str, bool]:
    cfg = open_clip.get_pretrained_cfg(name, tag)
    path = download_weights(name, tag, cfg, cache_dir=cache_dir, config_key=config_key)
    return path, bool(cfg.get('quick_gelu', False))


_CACHE: Dict[Tuple[Any, ...], nn.Module] = {}


def clear_clip_cache() -> int:
    """Forget all models built by :func:`build_clip`.

    Returns:
        The number of cached models dropped.
    """
    n = len(_CACHE)
    _CACHE.clear()
    return n


def build_clip(model_name: Optional[str] = 'ViT-B-16', pretrained: Optional[PathLike] = 'openai', *,
               device: Union[str, torch.device] = 'cpu', precision: str = 'fp32',
               cache_dir: Optional[str] = None, allow_unsafe_pickle: bool = False,
               config_key: Optional[str] = None) -> nn.Module:
    """Build a frozen open_clip CLIP model (eval mode, ``requires_grad=False``).

    Results are cached per (model_name, pretrained source incl. file mtime/size, device,
    precision, allow_unsafe_pickle): repeated calls return the same instance.

    Args:
        model_name: open_clip architecture (``open_clip.list_models()``; ``'ViT-B/16'`` is
            accepted), or None to take the architecture from an OpenAI-format checkpoint.
        pretrained: An open_clip pretrained tag (needs network unless already cached), a
            checkpoint path (OpenAI TorchScript/state dict, open_clip checkpoint,
            ``.safetensors``), or None for deterministic random weights.
        device: Target device.
        precision: ``'fp32'`` (default), ``'fp16'``/``'bf16'`` (OpenAI-style mixed: weights of
            linear/conv/attention layers low precision, LayerNorm in fp32), or
            ``'pure_fp16'``/``'pure_bf16'``.
        cache_dir: Download cache for pretrained tags.
        allow_unsafe_pickle: Allow unpickling files that need arbitrary Python objects
            (arbitrary code execution!). Only for trusted files.
        config_key: The config key the user sets ``pretrained`` with (e.g.
            ``'generator.clip.pretrained'``, ``'model.backbone.clip.pretrained'``), named in the
            errors of a failed download or a missing file; None names ``<section>.clip.pretrained``
            and the Python call.

    Returns:
        The open_clip model (``open_clip.model.CLIP`` or ``CustomTextCLIP``).

    Raises:
        ValueError: Unknown model name (close matches listed), bad precision, unknown tag,
            or neither model_name nor pretrained given.
        FileNotFoundError: ``pretrained`` looks like a path that does not exist.
        PretrainedDownloadError: A tag's weights could not be downloaded (offline: after one
            connection probe of at most 2.5 s, without open_clip's retries).
        CheckpointMismatchError: The checkpoint does not fit the architecture.
        UnsafeCheckpointError: The checkpoint needs arbitrary code to load.
        CheckpointError: The checkpoint is unreadable or not a CLIP state dict.
    """
    name = resolve_model_name(model_name)
    if precision not in PRECISIONS:
        raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}.')
    device = torch.device(device)
    source = _resolve_source(name, pretrained, cache_dir, config_key)
    if source.kind == 'random' and name is None:
        raise ValueError('build_clip needs a model_name for random weights (pretrained=None).')
    key = (name, source, str(device), precision, bool(allow_unsafe_pickle))
    if key in _CACHE:
        return _CACHE[key]

    if source.kind == 'random':
        model = _create_open_clip(name, precision, quick_gelu=False)
        model.to(device=device)
    elif source.kind == 'tag':
        path, quick_gelu = _download(name, source.value, cache_dir, config_key)
        model = _model_from_file(name, path, precision=precision, device=device,
                                 allow_unsafe_pickle=allow_unsafe_pickle, quick_gelu=quick_gelu)
    else:
        model = _model_from_file(name, source.value, precision=precision, device=device,
                                 allow_unsafe_pickle=allow_unsafe_pickle, quick_gelu=False)
    model.eval()
    for param in model.parameters():
        param.requires_grad_(False)
    _CACHE[key] = model
    return model


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def _tokenizer(name: Optional[str], context_length: Optional[int]) -> Any:
    if name is None:
        return open_clip.SimpleTokenizer(context_length=context_length or 77)
    text_cfg = _model_config(name).get('text_cfg', {})
    try:
        return open_clip.get_tokenizer(name, context_length=context_length)
    except Exception as exc:
        source = text_cfg.get('hf_tokenizer_name') or name
        raise RuntimeError(
            f"could not create the tokenizer of '{name}' ({type(exc).__name__}: {exc}); it needs the "
            f"Hugging Face tokenizer '{source}', which must be downloadable or cached.") from exc


def get_tokenizer(model_name: Optional[str] = 'ViT-B-16', *, context_length: Optional[int] = None) -> Any:
    """Tokenizer of an open_clip architecture (offline for OpenAI-style models).

    OpenAI-style models use open_clip's ``SimpleTokenizer`` with its bundled BPE vocab
    (no network). ``model_name=None`` returns that tokenizer too.

    Args:
        model_name: open_clip architecture name, or None.
        context_length: Override of the context length (default: the config's, or 77).

    Returns:
        A callable ``tokenizer(list_of_str) -> LongTensor (N, context_length)``.

    Raises:
        ValueError: Unknown model name.
        RuntimeError: The model needs a Hugging Face tokenizer that cannot be obtained.
    """
    return _tokenizer(resolve_model_name(model_name), context_length)
