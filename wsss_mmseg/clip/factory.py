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
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, convert_to_custom_text_state_dict, \
    convert_weights_to_lp, get_cast_dtype
from torch import nn

from .checkpoint import CheckpointError, CheckpointMismatchError, load_checkpoint_file
from .download import PretrainedDownloadError, download_weights
from .skip_init import skip_random_fills

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

logger = logging.getLogger(__name__)

PathLike = Union[str, 'os.PathLike[str]']

PRECISIONS = ('fp32', 'fp16', 'bf16', 'pure_fp16', 'pure_bf16')
OPENAI_SCALAR_KEYS = ('input_resolution', 'context_length', 'vocab_size')
_CHECKPOINT_SUFFIXES = ('.pt', '.pth', '.bin', '.ckpt', '.safetensors', '.pkl', '.tar')
_RANDOM_INIT_SEED = 0


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
# OpenAI-format geometry
# --------------------------------------------------------------------------------------

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
        n_pos = int(state_dict['visual.positional_embedding'].shape[0])
        grid = round((n_pos - 1) ** 0.5)
        if grid * grid + 1 != n_pos:
            raise CheckpointError(
                f"checkpoint '{path}': visual.positional_embedding has {n_pos} rows, not 1 + a "
                'square grid; cannot infer the native image size.')
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
        n_pos = int(state_dict['visual.attnpool.positional_embedding'].shape[0])
        out_grid = round((n_pos - 1) ** 0.5)
        if out_grid * out_grid + 1 != n_pos:
            raise CheckpointError(
                f"checkpoint '{path}': visual.attnpool.positional_embedding has {n_pos} rows, "
                'not 1 + a square grid.')
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


def build_openai_architecture(cfg: Mapping[str, Any], *, precision: str = 'fp32',
                              skip_init: bool = False) -> CLIP:
    """Instantiate an (untrained) open_clip ``CLIP`` for an inferred OpenAI config.

    Parameters are fp32; ``precision`` only selects the LayerNorm flavour (fp32-computing
    LayerNorm for the mixed-precision modes), exactly as open_clip does. The global torch
    RNG is left untouched.

    Args:
        cfg: Output of :func:`infer_openai_config`.
        precision: One of :data:`PRECISIONS`.
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


# --------------------------------------------------------------------------------------
# Loading state dicts
# --------------------------------------------------------------------------------------

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
